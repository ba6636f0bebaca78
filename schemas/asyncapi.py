"""The AMQP side of the wire contract (CONTRACT.md, README "Topology") as AsyncAPI 3.0.0.

Theory of operation. One ``servers`` entry (the broker, AMQP 0-9-1) and one channel per place a
message travels: the ingress exchange, the commands exchange, the events exchange, replies and
the dead queue. In AsyncAPI's AMQP binding a channel is either a routing key on an exchange
(``is: routingKey``) or a queue (``is: queue``), so:

- ``ingress``, ``commands`` and ``events`` have as address the routing key, a parameter (the
  runtime id; the event code), and name their exchange in the binding. The binding's exchange
  ``type`` knows only the standard types: the ingress exchange's ``x-consistent-hash`` goes into
  the extension ``x-exchange-type``; the commands exchange's exchange-to-exchange binding into
  ``x-bound-to``.
- ``replies`` has no fixed address (``null``): the worker publishes through the default exchange
  to the producer's ``reply_to`` (direct reply-to or a queue under ``MEERKAT_REPLY_QUEUE_PREFIX``);
  the send operations say so with their ``reply`` object.
- ``deadLetters`` is the queue ``meerkat.dead``; the fanout exchange ``meerkat.dead-letter`` in
  front of it is in the extension ``x-dead-letter-exchange``.

Message ``headers`` list the AMQP basic properties the contract relies on (``message_id``,
``type``, ``reply_to``, ``correlation_id``, ``user_id``), each described as a property, together
with the entries of the headers table (names starting with ``x-``), so that ``correlationId``
and the reply address can point at them. Payloads are ``$ref``s to the JSON Schema files written
next to this document (:mod:`schemas.export`). AsyncAPI 3.0 has no ``operationId`` or
``messageId`` fields any more: the keys of ``operations`` and ``components.messages`` are the ids.
"""

from __future__ import annotations

from typing import Any

from schemas.events import EventCode

INPUT_TYPE = "meerkat.input.v1"
COMMAND_TYPE = "meerkat.command.v1"
REPLY_TYPE = "meerkat.reply.v1"
"""The AMQP ``type`` of a reply (``worker.pipeline.replies``)."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
AMQP_BINDING = "0.3.0"

RUNTIME = "rt:demo"
INPUT_ID = "0190e4a8-7c2b-7d3e-8f00-0123456789ab"
COMMAND_ID = "0190e4a8-7c2b-7d3e-8f00-00000000c0de"
EVENT_ID = "0190e4a8-7c2b-7d3e-8f00-0000000e0e01"
AT = "2026-11-26T12:00:00Z"

INPUT_EXAMPLE: dict[str, Any] = {
    "runtime_id": RUNTIME,
    "input": {"input_type": "prompt",
              "header": {"id": INPUT_ID, "timestamp": AT, "source": {"type": "operator"},
                         "durability": "durable", "idempotency_key": "k-1"},
              "content": [{"type": "text", "text": "hello"}]},
}
COMMAND_EXAMPLE: dict[str, Any] = {
    "runtime_id": RUNTIME,
    "command": {"command_type": "retire", "command_id": COMMAND_ID, "reason": "scale down"},
}


def _prop(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


def _headers(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_MESSAGE_ID = _prop("AMQP property message_id: the input id or command id of the body "
                    "(a message whose message_id disagrees with its body is dead-lettered)",
                    format="uuid")
_REPLY_TO = _prop("AMQP property reply_to: where the outcome goes after the commit: "
                  f"{DIRECT_REPLY_TO} or a queue named with MEERKAT_REPLY_QUEUE_PREFIX")
_CORRELATION = _prop("AMQP property correlation_id, copied into the reply")
_USER_ID = _prop("AMQP property user_id: the publishing broker user (the broker refuses any "
                 "other); commands listed in MEERKAT_COMMAND_USERS need it")


def _producer_message(kind: str, type_: str, payload: str, example: dict[str, Any],
                      message_id: str, *, user_id: bool) -> dict[str, Any]:
    properties = {"message_id": _MESSAGE_ID,
                  "type": _prop(f"AMQP property type: {type_}", const=type_),
                  "reply_to": _REPLY_TO, "correlation_id": _CORRELATION}
    example_headers = {"message_id": message_id, "type": type_, "reply_to": DIRECT_REPLY_TO,
                       "correlation_id": "corr-1"}
    if user_id:
        properties["user_id"] = _USER_ID
        example_headers["user_id"] = "ops"
    return {
        "name": kind, "title": f"{kind.capitalize()} envelope",
        "summary": f"A {kind} for one runtime; routing key = its runtime_id",
        "contentType": "application/json",
        "headers": _headers(properties, ["message_id", "type"]),
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": {"$ref": f"{payload}.json"},
        "bindings": {"amqp": {"messageType": type_, "bindingVersion": AMQP_BINDING}},
        "examples": [{"name": kind, "headers": example_headers, "payload": example}],
    }


def _messages() -> dict[str, Any]:
    return {
        "input": _producer_message("input", INPUT_TYPE, "input-envelope", INPUT_EXAMPLE,
                                   INPUT_ID, user_id=False),
        "command": _producer_message("command", COMMAND_TYPE, "command-envelope",
                                     COMMAND_EXAMPLE, COMMAND_ID, user_id=True),
        "reply": {
            "name": "reply", "title": "Reply",
            "summary": "The outcome of an input or command, published after the commit",
            "contentType": "application/json",
            "headers": _headers({"correlation_id": _CORRELATION,
                                 "type": _prop(f"AMQP property type: {REPLY_TYPE}",
                                               const=REPLY_TYPE)}, ["type"]),
            "correlationId": {"location": "$message.header#/correlation_id"},
            "payload": {"$ref": "reply.json"},
            "bindings": {"amqp": {"messageType": REPLY_TYPE, "bindingVersion": AMQP_BINDING}},
            "examples": [{"name": "accepted",
                          "headers": {"correlation_id": "corr-1", "type": REPLY_TYPE},
                          "payload": {"correlation_id": "corr-1", "runtime_id": RUNTIME,
                                      "outcome": {"outcome_type": "accepted",
                                                  "input_id": INPUT_ID, "phase": "queued",
                                                  "lane": "queue", "admission_seq": 1}}}],
        },
        "event": {
            "name": "event", "title": "Event envelope",
            "summary": "A domain event, relayed from the transactional outbox",
            "contentType": "application/json",
            "headers": _headers({
                "message_id": _prop("AMQP property message_id: the event id", format="uuid"),
                "type": _prop("AMQP property type: the event code (also the routing key)",
                              enum=[code.value for code in EventCode]),
                "x-runtime-id": _prop("header: the runtime id of the event"),
            }, ["message_id", "type", "x-runtime-id"]),
            "payload": {"$ref": "event-envelope.json"},
            "examples": [{"name": "input.accepted",
                          "headers": {"message_id": EVENT_ID, "type": "input.accepted",
                                      "x-runtime-id": RUNTIME},
                          "payload": {"event_id": EVENT_ID, "at": AT, "runtime_id": RUNTIME,
                                      "category": "input_lifecycle", "code": "input.accepted",
                                      "data": {"lane": "queue"}, "causation_id": INPUT_ID,
                                      "correlation_id": "corr-1"}}],
        },
        "deadLetter": {
            "name": "deadLetter", "title": "Dead letter",
            "summary": "A rejected or over-delivered message, body and properties unchanged",
            "description": ("The body is the original one, which may not even be JSON. The "
                            "worker adds x-meerkat-error (the typed rejection as JSON, or the "
                            "failure), x-meerkat-routing-key and x-meerkat-dead-lettered-at; a "
                            "message the broker dead-lettered past x-delivery-limit carries "
                            "x-death instead."),
            "headers": _headers({
                "x-meerkat-error": _prop("header: why the worker dead-lettered the message"),
                "x-meerkat-routing-key": _prop("header: the routing key it was delivered with"),
                "x-meerkat-dead-lettered-at": {
                    "type": "integer",
                    "description": "header: when the worker dead-lettered the message, an AMQP "
                                   "timestamp (seconds since the Unix epoch)",
                },
                "message_id": _prop("AMQP property message_id, as published"),
                "type": _prop("AMQP property type, as published"),
            }, []),
            "payload": {"description": "the original body, unchanged"},
            "examples": [{"name": "malformed",
                          "headers": {"x-meerkat-error":
                                      '{"reject_type":"malformed","detail":"not JSON"}',
                                      "x-meerkat-routing-key": RUNTIME,
                                      "type": INPUT_TYPE},
                          "payload": "not json"}],
        },
    }


def _exchange_binding(name: str, type_: str | None, **extensions: Any) -> dict[str, Any]:
    exchange: dict[str, Any] = {"name": name, "durable": True, "autoDelete": False, "vhost": "/"}
    if type_ is not None:
        exchange["type"] = type_
    return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP_BINDING,
                     **extensions}}


_RUNTIME_ID = {"description": "the runtime id of the body (runtime_id)", "examples": [RUNTIME]}


def _channels() -> dict[str, Any]:
    def ref(message: str) -> dict[str, Any]:
        return {message: {"$ref": f"#/components/messages/{message}"}}

    return {
        "ingress": {
            "address": "{runtimeId}", "title": "meerkat.ingress",
            "description": ("Inputs: exchange meerkat.ingress (x-consistent-hash, durable), "
                            "routing key = runtime id; the broker hashes it onto one shard "
                            "queue meerkat.ingress.NN."),
            "parameters": {"runtimeId": _RUNTIME_ID}, "messages": ref("input"),
            "bindings": _exchange_binding("meerkat.ingress", None,
                                          **{"x-exchange-type": "x-consistent-hash"}),
        },
        "commands": {
            "address": "{runtimeId}", "title": "meerkat.commands",
            "description": ("Commands: exchange meerkat.commands (fanout, durable), bound "
                            "exchange-to-exchange into meerkat.ingress; the routing key (the "
                            "runtime id) is kept, so a command is ordered with its runtime's "
                            "inputs. Commands from anywhere else are refused."),
            "parameters": {"runtimeId": _RUNTIME_ID}, "messages": ref("command"),
            "bindings": _exchange_binding("meerkat.commands", "fanout",
                                          **{"x-bound-to": "meerkat.ingress"}),
        },
        "replies": {
            "address": None, "title": "reply_to",
            "description": ("Replies, published through the default exchange to the "
                            f"message's reply_to ({DIRECT_REPLY_TO}, or a queue named with "
                            "MEERKAT_REPLY_QUEUE_PREFIX) after the commit."),
            "messages": ref("reply"),
        },
        "events": {
            "address": "{eventCode}", "title": "meerkat.events",
            "description": "Events: exchange meerkat.events (topic, durable), routing key = "
                           "event code.",
            "parameters": {"eventCode": {"description": "the event code",
                                         "enum": [code.value for code in EventCode],
                                         "examples": ["run.completed"]}},
            "messages": ref("event"),
            "bindings": _exchange_binding("meerkat.events", "topic"),
        },
        "deadLetters": {
            "address": "meerkat.dead", "title": "meerkat.dead",
            "description": ("Dead letters: quorum queue meerkat.dead behind the fanout "
                            "exchange meerkat.dead-letter; bounded by x-max-length "
                            "(MEERKAT_DEAD_LETTER_MAX_LENGTH) with x-overflow drop-head."),
            "messages": ref("deadLetter"),
            "bindings": {"amqp": {
                "is": "queue", "bindingVersion": AMQP_BINDING,
                "queue": {"name": "meerkat.dead", "durable": True, "exclusive": False,
                          "autoDelete": False, "vhost": "/"},
                "x-dead-letter-exchange": {"name": "meerkat.dead-letter", "type": "fanout",
                                           "durable": True},
            }},
        },
    }


def _reply() -> dict[str, Any]:
    return {"address": {"location": "$message.header#/reply_to",
                        "description": "the reply_to property of the request"},
            "channel": {"$ref": "#/channels/replies"},
            "messages": [{"$ref": "#/channels/replies/messages/reply"}]}


def _operation(action: str, channel: str, message: str, summary: str,
               **extra: Any) -> dict[str, Any]:
    return {"action": action, "summary": summary,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}], **extra}


_PERSISTENT = {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}}


def _operations() -> dict[str, Any]:
    return {
        "sendInput": _operation("send", "ingress", "input",
                                "A producer publishes an input (persistent)",
                                bindings=_PERSISTENT, reply=_reply()),
        "sendCommand": _operation("send", "commands", "command",
                                  "An operator publishes a lifecycle command (persistent)",
                                  bindings=_PERSISTENT, reply=_reply()),
        "receiveReply": _operation("receive", "replies", "reply",
                                   "A producer that set reply_to receives the outcome"),
        "receiveEvents": _operation("receive", "events", "event",
                                    "A consumer binds a queue to meerkat.events by event code"),
        "receiveDeadLetters": _operation("receive", "deadLetters", "deadLetter",
                                         "An operator lists or replays dead letters"),
    }


def asyncapi_document() -> dict[str, Any]:
    """The AMQP channels, operations and messages of the contract as AsyncAPI 3.0.0."""
    return {
        "asyncapi": "3.0.0",
        "id": "urn:meerkat-worker",
        "info": {"title": "meerkat-worker", "version": "1",
                 "description": ("The messages the meerkat-worker consumes and publishes on "
                                 "RabbitMQ. Exchange and queue names use the default prefix "
                                 "meerkat (MEERKAT_TOPOLOGY_PREFIX).")},
        "defaultContentType": "application/json",
        "servers": {"broker": {
            "host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0-9-1",
            "pathname": "/", "description": "RabbitMQ with the plugin "
                                            "rabbitmq_consistent_hash_exchange (vhost /)"}},
        "channels": _channels(),
        "operations": _operations(),
        "components": {"messages": _messages()},
    }
