"""The error contract (README "Errors"): each row of the table, caused on purpose, prints one
`error: <what> — <what to do>` line on stderr, exits 2 and shows no traceback (which goes to the log)."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from kaizen import cli
from kaizen.cli import app
from kaizen.errors import report
from kaizen.supervisor import Supervisor
from streams.settings import Settings, get_settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """An empty working directory, nothing configured, fresh settings, short connect waits."""
    monkeypatch.chdir(tmp_path)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "AWS_ENDPOINT_URL", "KAIZEN_DATA_DIR", "SELF_BUILDING_MCP_TOKENS_FILE",
                 "SELF_BUILDING_MCP_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAIZEN_DEBUG", "0")  # restored after the test: `--debug` sets it for the children
    monkeypatch.setenv("KAIZEN_CONNECT_WAIT_SECONDS", "1")
    get_settings.cache_clear()
    saved = structlog.get_config()
    real = cli.configure_logging

    def configure_uncached(stderr: bool = False) -> None:
        real(stderr)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(cli, "configure_logging", configure_uncached)
    yield CliRunner()
    structlog.configure(**saved)
    get_settings.cache_clear()


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something listens on (it accepts connections and never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert " — " in errors[0], f"no 'what to do' part: {errors[0]}"
    return errors[0]


Case = Callable[[CliRunner, pytest.MonkeyPatch, Path, int], tuple[list[str], list[str]]]


def bad_number(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAFKA_TOPIC_PARTITIONS", "abc")
    return ["run", "--no-demo"], ["KAFKA_TOPIC_PARTITIONS='abc'", "valid integer", "default 4"]


def zero_partitions(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAFKA_TOPIC_PARTITIONS", "0")
    return ["run"], ["KAFKA_TOPIC_PARTITIONS='0'", "at least 1"]


def negative_duration(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("MONITORING_DURATION_SECONDS", "-5")
    return ["run"], ["MONITORING_DURATION_SECONDS='-5'", "greater than 0"]


def no_broker_set(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    return ["worker"], ["KAFKA_BOOTSTRAP_SERVERS is not set", "kaizen run"]


def broker_unreachable(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return ["run", "--no-demo"], ["no Kafka broker answers at 127.0.0.1:1", "(KAFKA_BOOTSTRAP_SERVERS)", "after 1 s"]


def aws_unreachable(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    return ["run", "--no-demo"], ["no AWS endpoint answers at http://127.0.0.1:1", "(AWS_ENDPOINT_URL)",
                                  "unset AWS_ENDPOINT_URL"]


def missing_input(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    return ["score", "-i", str(tmp / "nope.csv"), "-o", str(tmp / "o.csv")], ["--input", "no such file",
                                                                              "pass an existing CSV"]


def bad_input_line(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    (tmp / "s.csv").write_text("timestamp,value\n2014-07-01 00:00:00,1\nyesterday,2\n", encoding="utf-8")
    return ["score", "-i", str(tmp / "s.csv"), "-o", str(tmp / "o.csv")], ["s.csv:3", "fix that line"]


def unwritable_output(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    (tmp / "s.csv").write_text("timestamp,value\n2014-07-01 00:00:00,1\n", encoding="utf-8")
    out = tmp / "missing" / "dir" / "o.csv"
    return ["score", "-i", str(tmp / "s.csv"), "-o", str(out)], [f"directory {out.parent} does not exist", "mkdir -p"]


def port_taken(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("SELF_BUILDING_MCP_PORT", str(port))
    return ["run", "--no-demo"], [f"port {port} for the MCP server is taken", "SELF_BUILDING_MCP_PORT"]


def kafka_port_taken(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAIZEN_EMBEDDED_KAFKA_PORT", str(port))
    return ["run", "--no-demo", "--no-mcp"], [f"port {port} for the embedded Kafka broker is taken",
                                              "KAIZEN_EMBEDDED_KAFKA_PORT"]


def mcp_port_taken(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")  # "answers": something listens there
    mp.setenv("SELF_BUILDING_MCP_PORT", str(port))
    return ["mcp"], [f"port {port} for the MCP server is taken"]


def bad_tokens_file(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    (tmp / "tokens.json").write_text('{"short": {"principal": "x", "tenants": "*"}}', encoding="utf-8")
    mp.setenv("SELF_BUILDING_MCP_TOKENS_FILE", str(tmp / "tokens.json"))
    return ["run", "--no-demo"], ["SELF_BUILDING_MCP_TOKENS_FILE", "at least 16 characters", "fix the file"]


def unknown_topic(r: CliRunner, mp: pytest.MonkeyPatch, tmp: Path, port: int) -> tuple[list[str], list[str]]:
    mp.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return ["tail", "no.such.topic"], ["no Kafka broker answers at 127.0.0.1:1"]


CASES: dict[str, Case] = {
    "bad-number": bad_number, "zero-partitions": zero_partitions, "negative-duration": negative_duration,
    "no-broker-set": no_broker_set, "broker-unreachable": broker_unreachable, "aws-unreachable": aws_unreachable,
    "missing-input": missing_input, "bad-input-line": bad_input_line, "unwritable-output": unwritable_output,
    "port-taken": port_taken, "mcp-port-taken": mcp_port_taken, "kafka-port-taken": kafka_port_taken, "bad-tokens-file": bad_tokens_file,
    "tail-unreachable": unknown_topic,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_user_error_is_one_line_and_exit_2(case: str, runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, listener: int) -> None:
    args, expected = CASES[case](runner, monkeypatch, tmp_path, listener)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    line = _one_error_line(res.stderr)
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    log = tmp_path / ".kaizen" / "logs" / "errors.log"
    if case not in ("no-broker-set",):  # plain usage checks need no traceback
        assert log.is_file() and "Traceback" in log.read_text(encoding="utf-8")


def test_debug_prints_the_traceback(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "abc")
    res = runner.invoke(app, ["--debug", "run", "--no-demo"])
    assert res.exit_code == 2
    assert "Traceback" in res.stderr and "ValidationError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: invalid configuration")


def test_a_bug_is_exit_1_pointing_at_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAIZEN_DATA_DIR", raising=False)
    monkeypatch.setenv("KAIZEN_DEBUG", "0")
    try:
        {}["missing"]  # noqa: B018
    except KeyError as exc:
        assert report(exc) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError") and "errors.log" in err and "Traceback" not in err


def test_run_surfaces_a_childs_fatal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kaizen run` says why a child stopped: its own error line, not just "child exited, code 1"."""
    monkeypatch.chdir(tmp_path)
    sup = Supervisor(Settings(), tmp_path / "logs")
    try:
        sup.spawn("worker-0", ["worker"], extra_env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                                     "KAIZEN_CONNECT_WAIT_SECONDS": "1", "KAIZEN_DATA_DIR": str(tmp_path)})
        rc = sup.wait(stop_after=60)
    finally:
        sup.stop()
    assert rc == 2
    assert sup.failure is not None
    assert sup.failure.startswith("worker-0 stopped (exit code 2): no Kafka broker answers at 127.0.0.1:1")
    assert str(tmp_path / "logs" / "worker-0.log") in sup.failure


def test_readme_error_table_has_a_test_per_row() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Errors"):]
    section = section[:section.index("\n## ", 4)]
    rows = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE)
    assert rows, "README has no error table"
    assert set(rows) == set(CASES) | {"child-failed", "bug"}, set(rows) ^ (set(CASES) | {"child-failed", "bug"})
    assert sys.executable  # the table's commands run with the venv's kaizen
