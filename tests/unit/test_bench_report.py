"""The benchmark's table and JSON: each figure beside what it is compared with in the same run,
rows in the order of the scenarios, another build's row before this build's; and the command
line's sizes and implied scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.options import FULL, QUICK, parse_args
from bench.report import Row, document, ordered, table, write_json

pytestmark = pytest.mark.unit


def rows() -> list[Row]:
    return [
        Row("hot", "one runtime", 2000, 4.0, 500.0, "inputs/s", versus="accept",
            note="0.50x the runtime's first 2000"),
        Row("accept", "worker accept", 20000, 20.0, 1000.0, "inputs/s"),
        Row("latency", "accept latency", 5000, 10.0, 12.5, "ms",
            percentiles={"p50": 12.5, "p90": 30.0, "p99": 48.25, "max": 90.0}),
        Row("raw", "raw consumer", 20000, 2.0, 10000.0, "msg/s"),
        Row("slow", "slow executor", 2000, 10.0, 128.0, "runs/s", ideal=256.0),
        Row("accept@before", "worker accept [before]", 20000, 40.0, 500.0, "inputs/s"),
        Row("hot@before", "one runtime [before]", 2000, 8.0, 250.0, "inputs/s",
            versus="accept"),
        Row("cold", "first accept", 10000, 0.8, 800.0, "ms"),
    ]


def body(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines()[2:]]


def test_the_rows_come_in_the_order_of_the_scenarios_before_build_first() -> None:
    names = [row.scenario for row in ordered(rows())]
    assert names == ["raw", "accept@before", "accept", "slow", "latency", "hot@before", "hot",
                     "cold"]


def test_the_table_sets_each_figure_beside_its_comparisons() -> None:
    lines = body(table(rows()))
    by_name = {line[0]: line for line in lines}
    assert by_name["raw"][6] == "1.00x"
    assert by_name["accept"][4:7] == ["1000.0", "inputs/s", "0.10x"]
    assert by_name["accept@before"][6] == "0.05x"
    assert by_name["hot"][6] == "0.05x"
    assert by_name["hot"][7] == "0.50x accept; 0.50x the runtime's first 2000"
    assert by_name["hot@before"][7] == "0.50x accept"  # its own build's accept
    assert by_name["slow"][6:] == ["", "50% of ideal 256.0/s"]
    assert by_name["latency"][4:7] == ["p50 12.5 / p99 48.2", "ms", ""]
    assert by_name["cold"][4:7] == ["800.0", "ms", ""]


def test_the_table_is_aligned() -> None:
    text = table(rows())
    assert text.splitlines()[0].startswith("| scenario ")
    assert len({len(line) for line in text.splitlines()}) == 1


def test_small_figures_keep_their_digits() -> None:
    assert Row("cold", "x", 1, 0.004, 4.2, "ms").figure() == "4.20"
    assert Row("cold", "x", 1, 0.004, 0.0042, "s").figure() == "0.004"
    assert Row("memory", "x", 1, 1.0, 12345.67, "B").figure() == "12345.7"


def test_without_a_baseline_nothing_is_compared_with_it() -> None:
    alone = [Row("accept", "worker accept", 10, 1.0, 10.0, "inputs/s"),
             Row("hot", "one runtime", 10, 1.0, 5.0, "inputs/s", versus="e2e")]
    lines = body(table(alone))
    assert [line[6:] for line in lines] == [["", ""], ["", ""]]


def test_the_json_holds_every_row_with_its_ratios(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    write_json(path, rows(), {"quick": True})
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded == json.loads(json.dumps(document(rows(), {"quick": True})))
    assert loaded["settings"] == {"quick": True}
    by_name = {entry["scenario"]: entry for entry in loaded["scenarios"]}
    assert by_name["accept"]["ratio_to_raw"] == pytest.approx(0.1)
    assert by_name["hot"]["ratio_to_versus"] == pytest.approx(0.5)
    assert by_name["slow"]["percent_of_ideal"] == pytest.approx(50.0)
    assert by_name["latency"]["percentiles"]["p99"] == 48.25
    assert by_name["latency"]["ratio_to_raw"] is None


def test_quick_sizes_and_sizes_given_win() -> None:
    args = parse_args(["--quick", "--inputs", "50"])
    assert args.inputs == 50
    assert args.runtimes == QUICK["runtimes"]
    assert parse_args([]).hot_queued == FULL["hot_queued"]
    assert parse_args([]).selected[:2] == ["raw", "dramatiq"]


def test_latency_brings_accept_unless_its_rate_is_given() -> None:
    implied = parse_args(["--only", "latency"])
    assert implied.selected == ["accept", "latency"]
    assert implied.implied
    given = parse_args(["--only", "latency", "--latency-rate", "100"])
    assert given.selected == ["latency"]


def test_the_command_line_refuses_what_cannot_be_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--only", "nothing"], ["--memory-runtimes", "10000"], ["--inputs", "0"],
                 ["--latency-rate", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_worker_settings_are_parsed_and_checked() -> None:
    args = parse_args(["--worker-setting", "MEERKAT_EVENTS=run.*,input.consumed"])
    assert args.worker_setting == [("MEERKAT_EVENTS", "run.*,input.consumed")]
    with pytest.raises(SystemExit):
        parse_args(["--worker-setting", "EVENTS=run.*"])
