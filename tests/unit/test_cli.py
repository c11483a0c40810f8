"""The `kaizen` command line: every command listed and documented, usage errors exit 2 saying what to fix."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from kaizen import cli
from kaizen.cli import app
from streams.settings import get_settings

COMMANDS = ["run", "worker", "connect", "mcp", "demo", "score", "patterns", "bench", "healing",
            "cloudwatch-export", "produce", "tail", "asyncapi", "validate"]
HEALING = ["status", "triggers", "actions", "check", "history"]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A runner in an empty directory (no .env) with fresh settings and a wide terminal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    # Commands configure logging onto the runner's stream, closed after each invoke: keep loggers from
    # caching it (a later test logging through them would write to a closed file), and restore after.
    saved = structlog.get_config()
    real = cli.configure_logging

    def configure_uncached(stderr: bool = False) -> None:
        real(stderr)
        structlog.configure(cache_logger_on_first_use=False)

    monkeypatch.setattr(cli, "configure_logging", configure_uncached)
    yield CliRunner()
    structlog.configure(**saved)
    get_settings.cache_clear()


def _listed(help_text: str) -> set[str]:
    return set(re.findall(r"^[│|]?\s+([a-z][a-z-]+)\s{2,}", help_text, flags=re.MULTILINE))


def test_help_lists_every_command(runner: CliRunner) -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    listed = _listed(res.output)
    assert set(COMMANDS) <= listed, f"missing: {set(COMMANDS) - listed}"


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    res = runner.invoke(app, [])
    assert "Usage: kaizen" in res.output and "score" in res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(runner: CliRunner, command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert f"Usage: kaizen {command}" in res.output


@pytest.mark.parametrize("sub", HEALING)
def test_healing_subcommands_have_help(runner: CliRunner, sub: str) -> None:
    res = runner.invoke(app, ["healing", sub, "--help"])
    assert res.exit_code == 0, res.output
    assert f"Usage: kaizen healing {sub}" in res.output


def test_score_missing_file_exits_2_naming_it(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    res = runner.invoke(app, ["score", "--input", str(missing), "--output", str(tmp_path / "o.csv")])
    assert res.exit_code == 2
    assert "--input" in res.stderr and str(missing) in res.stderr and "no such file" in res.stderr
    assert not (tmp_path / "o.csv").exists()


def test_score_without_options_is_a_usage_error(runner: CliRunner) -> None:
    res = runner.invoke(app, ["score"])
    assert res.exit_code == 2
    assert "--input" in res.output


def test_score_bad_row_exits_2_naming_the_line(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text("timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,twelve\n", encoding="utf-8")
    res = runner.invoke(app, ["score", "-i", str(src), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and "s.csv:3" in res.stderr and "'twelve' is not a number" in res.stderr


def test_score_and_patterns_write_their_csv(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text("timestamp,value\n" + "".join(f"{1_404_172_800 + 300 * i},{i % 7}\n" for i in range(50)),
                   encoding="utf-8")
    res = runner.invoke(app, ["score", "-i", str(src), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 0, res.output
    assert "scored 50 rows" in res.stdout
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 51
    log = tmp_path / "app.log"
    log.write_text("user 1 logged in\nuser 2 logged in\ndisk full on /dev/sda\n", encoding="utf-8")
    res = runner.invoke(app, ["patterns", "-i", str(log), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert "3 lines -> 2 patterns" in res.stdout


def test_patterns_missing_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["patterns", "-i", str(tmp_path / "none.log"), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 2 and "no such file" in res.stderr


@pytest.mark.parametrize("args", [["worker"], ["connect"], ["mcp"], ["tail", "audit"], ["produce", "commands"]])
def test_commands_without_a_broker_say_what_to_set(runner: CliRunner, args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert res.stderr.startswith("error: ") and "KAFKA_BOOTSTRAP_SERVERS" in res.stderr


def test_invalid_configuration_is_reported(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDWATCH_LOG_SAMPLING_RATE", "2.5")
    res = runner.invoke(app, ["cloudwatch-export"])
    assert res.exit_code == 2
    assert "invalid configuration" in res.stderr and "CLOUDWATCH_LOG_SAMPLING_RATE" in res.stderr


def test_cloudwatch_export_prints_dashboard_and_alarms(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["cloudwatch-export"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dashboard"]["DashboardName"]
    assert data["dashboard"]["DashboardBody"]["widgets"]
    assert data["alarms"] and all({"AlarmName", "MetricName", "Threshold"} <= set(a) for a in data["alarms"])
    out = tmp_path / "cw.json"
    res = runner.invoke(app, ["cloudwatch-export", "--output", str(out)])
    assert res.exit_code == 0 and json.loads(out.read_text()) == data


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    lines = [ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert lines[0] == "```"
    assert lines[1].startswith("make run") and lines[2].startswith("make test")


def test_readme_documents_every_setting_and_command() -> None:
    from streams.settings import Settings

    text = README.read_text(encoding="utf-8")
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in text]
    assert not missing, f"README does not document {missing}"
    assert all(f"kaizen {c}" in text for c in COMMANDS), [c for c in COMMANDS if f"kaizen {c}" not in text]


def test_tables_are_complete_when_piped(tmp_path: Path) -> None:
    """Piped to another program (stdout not a terminal), no cell is cut with '…' (was "high_retry…")."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("COLUMNS", "KAIZEN_HEALING_CONFIG")}
    run = [sys.executable, "-m", "kaizen.cli", "healing"]
    names = [t["name"] for t in json.loads(subprocess.run([*run, "triggers", "--json"], capture_output=True,
                                                          text=True, check=True, cwd=tmp_path, env=env).stdout)]
    assert len(names) >= 5 and max(len(n) for n in names) > 12
    for sub in ("triggers", "actions"):
        out = subprocess.run([*run, sub], capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout
        assert "…" not in out, out
        if sub == "triggers":
            assert all(re.search(rf"\b{re.escape(n)}\b", out) for n in names), out
