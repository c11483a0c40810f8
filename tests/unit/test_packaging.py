"""The wheel ships every product module and asset: packaging is discovered, not listed by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kaizen", "streams", "agents", "connectors", "mcp_server", "benchmarks")


def tracked_product_files() -> list[str]:
    """Every file git tracks under the product packages (modules and assets), in wheel path form."""
    out = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True)
    return sorted(p for p in out.stdout.splitlines() if "__pycache__" not in p and not p.endswith(".pyc"))


def missing_from(wheel_names: set[str], expected: list[str]) -> list[str]:
    return [p for p in expected if p not in wheel_names]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    if not (ROOT / ".git").exists():
        pytest.fail("the packaging test needs the git checkout (it compares the wheel with `git ls-files`)")
    out_dir = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what git has (tracked and new, not ignored): a stale build/ directory of the
    # checkout must not supply files the packaging configuration would leave out.
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for rel in listed:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    # --no-build-isolation: build with the environment's setuptools, nothing downloaded.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out_dir),
         str(src)],
        check=True, capture_output=True, text=True,
    )
    wheels = list(out_dir.glob("kaizen-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        return set(zf.namelist())


def test_every_module_and_asset_is_in_the_wheel(wheel_names: set[str]) -> None:
    expected = tracked_product_files()
    assert any(p.startswith("mcp_server/dashboard/") for p in expected), "dashboard assets are tracked"
    assert any(p.startswith("kaizen/demo/workload/") for p in expected), "the demo workload is tracked"
    missing = missing_from(wheel_names, expected)
    assert not missing, f"files missing from the wheel (packaging drifted): {missing}"


def test_no_tests_in_the_wheel(wheel_names: set[str]) -> None:
    assert not [n for n in wheel_names if n.startswith("tests/")]


def test_the_check_fails_on_a_missing_file() -> None:
    """The comparison itself can fail: a wheel without the dashboard is reported."""
    expected = ["mcp_server/dashboard/app.js", "streams/records.py"]
    assert missing_from({"streams/records.py"}, expected) == ["mcp_server/dashboard/app.js"]


def test_the_image_copies_every_package_and_the_readme() -> None:
    """The Dockerfile lists what it copies: a package left out would be missing from the image."""
    copied = {part.rstrip("/") for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") for part in line.split()[1:-1]}
    missing = [p for p in (*PACKAGES, "pyproject.toml", "README.md") if p not in copied]
    assert not missing, f"Dockerfile does not copy {missing}"
