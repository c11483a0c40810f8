"""`kaizen validate --tenant T DIR`: every bypass and path case rejected with its finding, exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kaizen.cli import app
from tests.unit.test_validation import BYPASSES

BENIGN = "def ttl(seconds: int) -> int:\n    return max(1, seconds)\n"
runner = CliRunner()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["validate", *args])
    return r.exit_code, r.stdout, r.stderr


def test_benign_change_is_accepted(tmp_path: Path) -> None:
    d = _tree(tmp_path / "cs", {"generated/billing/cache.py": BENIGN, "generated/billing/notes.md": "# ttl\n",
                                "tests/test_cache.py": "def test_x() -> None:\n    assert 1 + 1 == 2\n"})
    code, out, _ = _run("--tenant", "acme", str(d))
    assert code == 0, out
    assert out.strip().endswith("ok: 3 file(s) acceptable as one change set for tenant acme")


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_every_bypass_is_rejected_through_the_cli(tmp_path: Path, case: str) -> None:
    src, expected = BYPASSES[case]
    d = _tree(tmp_path / "cs", {f"generated/x/{case}.py": src})
    code, out, _ = _run("--tenant", "acme", str(d))
    assert code == 1, out
    for rule in expected:
        assert f"generated/x/{case}.py:" in out and f"[{rule}]" in out, (rule, out)
    assert "rejected:" in out.splitlines()[-1]


@pytest.mark.parametrize(("rel", "rule"), [(".git/config", "path.vcs"), ("generated/run.sh", "path.suffix"),
                                           ("svc/x.py", "path.root")])
def test_bad_paths_are_rejected(tmp_path: Path, rel: str, rule: str) -> None:
    d = _tree(tmp_path / "cs", {rel: "[core]\n\tfsmonitor = touch /tmp/pwned\n" if rel.endswith("config")
                                else "X = 1\n", "generated/ok.py": BENIGN})
    code, out, _ = _run("--tenant", "acme", str(d))
    assert code == 1 and f"{rel}:0: [{rule}]" in out, out


def test_symlink_out_of_the_root_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text(BENIGN)
    d = _tree(tmp_path / "cs", {"generated/ok.py": BENIGN})
    os.symlink(outside, d / "generated" / "link")
    os.symlink(outside / "x.py", d / "generated" / "x.py")
    code, out, _ = _run("--tenant", "acme", str(d))
    assert code == 1
    assert "generated/link:0: [path.symlink]" in out and "generated/x.py:0: [path.symlink]" in out, out


def test_paths_that_cannot_come_from_a_directory_are_rejected_by_the_same_function() -> None:
    # `../x.py` and `/abs.py` cannot be files under DIR; the cycle's LLM answers can name them, and the
    # function `kaizen validate` calls refuses them (the cycle test sends them through a fake LLM)
    from agents.improvement.logic.validation import validate

    r = validate({"../x.py": BENIGN, "/abs.py": BENIGN}, "acme")
    assert {(f.path, f.rule) for f in r.findings} >= {("../x.py", "path.parent"), ("/abs.py", "path.absolute")}


def test_json_output_and_component_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = "import socket\n\n\ndef f() -> object:\n    return socket.create_connection(('h', 80))\n"
    d = _tree(tmp_path / "cs", {"generated/api/net.py": net})
    code, out, _ = _run("--tenant", "acme", "--json", str(d))
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["tenant"] == "acme"
    assert {"check", "path", "line", "rule", "message"} == set(data["findings"][0])
    from streams.settings import get_settings

    monkeypatch.setenv("KAIZEN_VALIDATION_POLICIES", '{"api": {"capabilities": ["network"]}}')
    get_settings.cache_clear()
    try:
        assert _run("--tenant", "acme", "--component", "api", str(d))[0] == 0
        assert _run("--tenant", "acme", "--component", "web", str(d))[0] == 1
    finally:
        get_settings.cache_clear()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = _run("--tenant", "acme", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error: ") and " — " in err and "does not exist" in err
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = _run("--tenant", "acme", str(f))
    assert code == 2 and "is not a directory" in err
    code, _, err = _run("--tenant", "Acme/../x", str(tmp_path))
    assert code == 2 and err.startswith("error: tenant ") and " — " in err
    assert _run(str(tmp_path))[0] == 2  # --tenant missing


def test_the_installed_command(tmp_path: Path) -> None:
    d = _tree(tmp_path / "cs", {"generated/a.py": "import pty\n\n\ndef f() -> None:\n    pty.spawn('sh')\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    p = subprocess.run([sys.executable, "-m", "kaizen.cli", "validate", "--tenant", "acme", str(d)],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 1 and "[py.capability]" in p.stdout, (p.stdout, p.stderr)


async def test_the_cycle_and_the_cli_run_the_same_validation(tmp_path: Path) -> None:
    from agents.improvement.changeset import check_change_set
    from connectors.actuators.git import GitActuator
    from kaizen.validate_cmd import collect, run
    from streams.settings import Settings

    d = _tree(tmp_path / "cs", {"generated/billing/cache.py": BENIGN, ".git/config": "[core]\n",
                                "generated/billing/net.py": "import socket\n", "generated/b.json": "{",
                                "svc/x.py": "X = eval('1')\n"})
    settings = Settings(kaizen_validation_policies={"billing": {"allowed_imports": ["json"]}})
    cli = run(d, "acme", "billing", False, settings)
    files = {k: v.decode() for k, v in collect(d).items()}
    res, record = await check_change_set(settings, GitActuator(d), files, "acme", "billing")
    assert not cli.ok and [f.as_dict() for f in res.findings] == [f.as_dict() for f in cli.findings]
    assert record["findings"] == [f.as_dict() for f in cli.findings] and "diff" in record
