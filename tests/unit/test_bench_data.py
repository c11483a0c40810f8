"""Benchmark data folders: found by override, or a missing one named with what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.data import bench_data


def test_an_override_holding_the_marker_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text("{}")
    monkeypatch.setenv("KAIZEN_NAB_DIR", str(tmp_path))
    assert bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json") == tmp_path.resolve()


def test_a_folder_without_the_data_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_LOGHUB_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"should hold log_score.py.*set KAIZEN_LOGHUB_DIR"):
        bench_data("KAIZEN_LOGHUB_DIR", "loghub", "log_score.py")
