"""Benchmark data folders: found by override, or a missing one named with what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import data
from benchmarks.data import bench_data


def test_an_override_holding_the_marker_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text("{}")
    monkeypatch.setenv("KAIZEN_NAB_DIR", str(tmp_path))
    assert bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json") == tmp_path.resolve()


def test_a_folder_without_the_data_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_LOGHUB_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"should hold log_score.py.*or KAIZEN_LOGHUB_DIR to the loghub data folder"):
        bench_data("KAIZEN_LOGHUB_DIR", "loghub", "log_score.py")


def test_a_data_root_holds_every_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loghub").mkdir()
    (tmp_path / "loghub" / "log_score.py").write_text("")
    monkeypatch.delenv("KAIZEN_LOGHUB_DIR", raising=False)
    monkeypatch.setenv("KAIZEN_BENCH_DATA", str(tmp_path))
    assert bench_data("KAIZEN_LOGHUB_DIR", "loghub", "log_score.py") == (tmp_path / "loghub").resolve()


def test_without_settings_the_repository_folder_then_a_bench_folder_beside_it_is_looked_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAIZEN_NAB_DIR", raising=False)
    monkeypatch.delenv("KAIZEN_BENCH_DATA", raising=False)
    repo = tmp_path / "kaizen"
    (repo / "benchmarks").mkdir(parents=True)
    monkeypatch.setattr(data, "REPO_ROOT", repo)
    with pytest.raises(FileNotFoundError, match=r"benchmarks/data/nab.*nor in a bench/nab folder beside"):
        bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json")
    beside = tmp_path / "datasets" / "bench" / "nab"
    (beside / "labels").mkdir(parents=True)
    (beside / "labels" / "combined_windows.json").write_text("{}")
    assert bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json") == beside.resolve()
    inside = repo / "benchmarks" / "data" / "nab"  # the repository's own folder comes first
    (inside / "labels").mkdir(parents=True)
    (inside / "labels" / "combined_windows.json").write_text("{}")
    assert bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json") == inside.resolve()
