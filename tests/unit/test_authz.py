"""The authorization rules of worker/pipeline/authz.py, and where parsing applies them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import (
    COMMAND_MESSAGE_TYPE,
    COMMAND_TYPES,
    DEFAULT_LIMITS,
    INPUT_MESSAGE_TYPE,
    Malformed,
    Rejected,
    Unauthorized,
)
from tests.unit.wire_bodies import RUNTIME, command_document, encode, input_document
from worker.cli.common import EXIT_USAGE
from worker.cli.main import main
from worker.config import Settings
from worker.pipeline.access import access_of
from worker.pipeline.authz import Access, command_users, reply_allowed
from worker.pipeline.parsing import ParsedCommand, ParsedInput, Unparseable, parse_delivery
from worker.pipeline.policy import Action, settlement_for
from worker.topology import Topology

pytestmark = pytest.mark.unit

INGRESS = "meerkat.ingress"
COMMANDS = "meerkat.commands"
ACCESS = Access(INGRESS, COMMANDS)


def guarded(users: dict[str, list[str]]) -> Access:
    return Access(INGRESS, COMMANDS, command_users=command_users(users))


# --- origin -----------------------------------------------------------------------------------


def test_each_kind_is_allowed_through_its_own_exchange_only() -> None:
    assert ACCESS.origin_refusal(COMMANDS, is_command=True) is None
    assert ACCESS.origin_refusal(INGRESS, is_command=False) is None
    assert ACCESS.origin_refusal(INGRESS, is_command=True) == Unauthorized(
        detail="a command must be published to meerkat.commands, not to exchange "
               "'meerkat.ingress'")
    assert ACCESS.origin_refusal(COMMANDS, is_command=False) == Unauthorized(
        detail="an input must be published to meerkat.ingress, not to exchange "
               "'meerkat.commands'")


def test_a_message_published_straight_to_a_queue_is_refused_whatever_its_kind() -> None:
    for is_command in (True, False):
        refusal = ACCESS.origin_refusal("", is_command)
        assert refusal is not None
        assert "not to the default exchange" in refusal.detail


def test_another_deployments_exchange_is_refused() -> None:
    assert ACCESS.origin_refusal("staging.commands", is_command=True) is not None


# --- allow-list -------------------------------------------------------------------------------


def test_without_an_allow_list_every_publisher_may_send_every_command() -> None:
    for command_type in COMMAND_TYPES:
        assert ACCESS.user_refusal(command_type, None) is None
        assert ACCESS.user_refusal(command_type, "anyone") is None


def test_a_listed_command_needs_a_listed_user() -> None:
    access = guarded({"destroy": ["ops", "admin"]})
    assert access.user_refusal("destroy", "ops") is None
    assert access.user_refusal("destroy", "admin") is None
    assert access.user_refusal("destroy", "guest") == Unauthorized(
        detail="destroy is not allowed for user 'guest'")
    assert access.user_refusal("destroy", None) == Unauthorized(
        detail="destroy is not allowed for a publisher with no user_id")
    assert access.user_refusal("destroy", "") is not None
    assert access.user_refusal("stop", "guest") is None  # no entry: no restriction


def test_a_star_entry_covers_every_command_and_adds_to_a_specific_one() -> None:
    access = guarded({"*": ["ops"], "destroy": ["admin"]})
    for command_type in COMMAND_TYPES:
        assert access.user_refusal(command_type, "ops") is None
        assert access.user_refusal(command_type, "guest") is not None
    assert access.user_refusal("destroy", "admin") is None
    assert access.user_refusal("stop", "admin") is not None


def test_an_empty_list_refuses_the_command_to_everyone() -> None:
    assert guarded({"reset": []}).user_refusal("reset", "ops") is not None


def test_an_unknown_command_type_in_the_allow_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="'destory'"):
        command_users({"destory": ["ops"]})


# --- reply targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply_to", "prefix", "allowed"),
    [
        ("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjM0", "", True),
        ("amq.rabbitmq.reply-to.x", "replies.", True),
        ("amq.rabbitmq.reply-to", "", False),  # the broker always rewrites the bare name
        ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", "", False),
        ("replies.client-1", "", False),
        ("replies.client-1", "replies.", True),
        ("other.client-1", "replies.", False),
        ("", "", False),
    ],
)
def test_replies_go_to_direct_reply_to_or_to_queues_with_the_prefix(
    reply_to: str, prefix: str, allowed: bool
) -> None:
    assert reply_allowed(reply_to, prefix) is allowed
    assert Access(INGRESS, COMMANDS, reply_queue_prefix=prefix).reply_allowed(reply_to) is allowed


def test_no_reply_goes_to_the_deployments_own_queues_whatever_the_prefix() -> None:
    access = Access(INGRESS, COMMANDS, reply_queue_prefix="meerkat", own_prefix="meerkat")
    assert not access.reply_allowed("meerkat.ingress.00")
    assert not access.reply_allowed("meerkat.dead")
    assert access.reply_allowed("meerkat-replies.1")


# --- parsing applies the rules ----------------------------------------------------------------


def parse(body: bytes, message_type: str | None, exchange: str, user_id: str | None = None,
          access: Access = ACCESS) -> object:
    return parse_delivery(body, message_type, DEFAULT_LIMITS, routing_key=RUNTIME,
                          exchange=exchange, user_id=user_id, access=access)


def test_parsing_takes_each_kind_from_its_own_exchange() -> None:
    assert isinstance(parse(encode(input_document()), INPUT_MESSAGE_TYPE, INGRESS), ParsedInput)
    command = encode(command_document("stop"))
    assert isinstance(parse(command, COMMAND_MESSAGE_TYPE, COMMANDS), ParsedCommand)


@pytest.mark.parametrize("message_type", [COMMAND_MESSAGE_TYPE, None])
def test_a_command_from_the_ingress_exchange_is_refused_and_recorded_on_its_runtime(
    message_type: str | None,
) -> None:
    parsed = parse(encode(command_document("destroy")), message_type, INGRESS)
    assert isinstance(parsed, Unparseable)
    assert isinstance(parsed.reason, Unauthorized)
    assert (parsed.runtime_id, parsed.is_command) == (RUNTIME, True)


def test_an_input_from_the_commands_exchange_is_refused() -> None:
    parsed = parse(encode(input_document()), INPUT_MESSAGE_TYPE, COMMANDS)
    assert isinstance(parsed, Unparseable)
    assert isinstance(parsed.reason, Unauthorized)
    assert not parsed.is_command


def test_the_origin_is_checked_before_the_schema() -> None:
    document = command_document("stop")
    document["command"]["command_type"] = "explode"
    parsed = parse(encode(document), COMMAND_MESSAGE_TYPE, INGRESS)
    assert isinstance(parsed, Unparseable)
    assert isinstance(parsed.reason, Unauthorized)


def test_a_body_that_is_not_json_stays_malformed_wherever_it_came_from() -> None:
    parsed = parse(b"{not json", COMMAND_MESSAGE_TYPE, INGRESS)
    assert isinstance(parsed, Unparseable)
    assert isinstance(parsed.reason, Malformed)


def test_parsing_applies_the_allow_list_to_commands_only() -> None:
    access = guarded({"destroy": ["ops"]})
    destroy = encode(command_document("destroy"))
    assert isinstance(parse(destroy, COMMAND_MESSAGE_TYPE, COMMANDS, "ops", access),
                      ParsedCommand)
    for user_id in ("guest", None):
        parsed = parse(destroy, COMMAND_MESSAGE_TYPE, COMMANDS, user_id, access)
        assert isinstance(parsed, Unparseable)
        assert isinstance(parsed.reason, Unauthorized)
        assert "destroy" in parsed.reason.detail
        assert parsed.runtime_id == RUNTIME
    stop = encode(command_document("stop"))
    assert isinstance(parse(stop, COMMAND_MESSAGE_TYPE, COMMANDS, None, access), ParsedCommand)
    assert isinstance(parse(encode(input_document()), INPUT_MESSAGE_TYPE, INGRESS, None, access),
                      ParsedInput)


def test_without_access_nothing_is_checked() -> None:
    body = encode(command_document("destroy"))
    assert isinstance(parse_delivery(body, COMMAND_MESSAGE_TYPE, DEFAULT_LIMITS), ParsedCommand)


def test_an_unauthorized_delivery_is_dead_lettered_with_its_reason_and_answered() -> None:
    parsed = parse(encode(command_document("destroy")), COMMAND_MESSAGE_TYPE, INGRESS)
    assert isinstance(parsed, Unparseable)
    settlement = settlement_for(parsed, None)
    assert settlement.action is Action.DEAD_LETTER
    assert settlement.reason_type == "unauthorized"
    assert settlement.reply == Rejected(reason=parsed.reason)
    assert '"reject_type":"unauthorized"' in (settlement.reason or "")


# --- settings ---------------------------------------------------------------------------------


def test_the_settings_make_the_deployments_access() -> None:
    settings = Settings(_env_file=None, command_users={"destroy": ["ops"], "*": ["admin"]},
                        reply_queue_prefix="replies.", topology_prefix="staging")
    access = access_of(settings, Topology.from_settings(settings))
    assert (access.ingress_exchange, access.commands_exchange) == (
        "staging.ingress", "staging.commands")
    assert dict(access.command_users) == {"destroy": frozenset({"ops"}),
                                         "*": frozenset({"admin"})}
    assert access.reply_allowed("replies.1")
    assert not access.reply_allowed("staging.dead")


def test_by_default_nothing_is_restricted_and_only_direct_reply_to_is_answered() -> None:
    access = access_of(Settings(_env_file=None), Topology())
    assert dict(access.command_users) == {}
    assert not access.reply_allowed("amq.gen-1")


def test_command_users_is_read_as_json_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEERKAT_COMMAND_USERS", '{"destroy": ["ops"], "*": ["admin"]}')
    assert Settings().command_users == {"destroy": ["ops"], "*": ["admin"]}


@pytest.mark.parametrize("value", ['{"destory": ["ops"]}', '{"destroy": "ops"}', '["ops"]'])
def test_a_bad_command_users_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEERKAT_COMMAND_USERS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_an_unknown_command_type_in_the_setting_exits_two(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEERKAT_COMMAND_USERS", '{"destory": ["ops"]}')
    assert main(["schemas", "export", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "MEERKAT_COMMAND_USERS" in err
    assert "destory" in err
