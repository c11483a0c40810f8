"""`kaizen score` / `kaizen patterns` replay: same detector as the live agent, row-for-row output, clear errors."""

from __future__ import annotations

import csv
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, score_series
from agents.scoring.logic.series import SeriesModel
from benchmarks.data import bench_data
from kaizen.replay import parse_timestamp, patterns_file, score_csv


def _nab_file() -> Path | None:
    """A real NAB file when the benchmark data is configured (benchmarks/data.py), else None."""
    try:
        return bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json") / "data" / "realKnownCause" \
            / "machine_temperature_system_failure.csv"
    except FileNotFoundError:
        return None


NAB_FILE = _nab_file()
START = 1_700_000_000


def _write(path: Path, rows: list[tuple[str, str]], header: str = "timestamp,value") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{v}\n" for t, v in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _level_shift(n: int = 1200, shift_at: int = 900) -> list[tuple[float, float]]:
    rng = random.Random(7)
    return [(START + 300.0 * i, (10.0 if i < shift_at else 60.0) + rng.gauss(0, 1)) for i in range(n)]


def test_level_shift_round_trip(tmp_path: Path) -> None:
    series = _level_shift()
    iso = [(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S"), f"{v:.4f}") for t, v in series]
    src = _write(tmp_path / "in.csv", iso)
    out = tmp_path / "out.csv"
    assert score_csv(src, out) == len(series)
    rows = _read(out)
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    assert [(r["timestamp"], r["value"]) for r in rows] == iso  # one row per input row, input kept verbatim
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores[900:960]) >= ANOMALY_THRESHOLD, "the level shift is not detected"
    assert max(scores[200:900]) < ANOMALY_THRESHOLD, "false alarm on the steady part"
    # Exactly the live agent's model: a SeriesModel fed the same points gives the same scores.
    model = SeriesModel.new("value")
    live = [model.observe(datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp(),
                          float(v))[0] for t, v in iso]
    assert scores == pytest.approx([round(s, 6) for s in live], abs=1e-6)


def test_epoch_and_iso_timestamps_score_alike(tmp_path: Path) -> None:
    series = _level_shift(600, 450)
    epoch = _write(tmp_path / "epoch.csv", [(f"{t:.0f}", repr(v)) for t, v in series])
    iso = _write(tmp_path / "iso.csv", [(datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
                                        repr(v)) for t, v in series])
    score_csv(epoch, tmp_path / "a.csv")
    score_csv(iso, tmp_path / "b.csv")
    a = [r["anomaly_score"] for r in _read(tmp_path / "a.csv")]
    b = [r["anomaly_score"] for r in _read(tmp_path / "b.csv")]
    assert a == b and any(float(s) >= ANOMALY_THRESHOLD for s in a)


def test_nab_like_file_matches_the_benchmark_path(tmp_path: Path) -> None:
    if NAB_FILE is not None and NAB_FILE.is_file():
        src = NAB_FILE
    else:  # no shared bench here: a NAB-shaped file (5-minute steps, daily cycle, one spike)
        rows = []
        for i in range(4000):
            t = datetime.fromtimestamp(START + 300 * i, UTC).strftime("%Y-%m-%d %H:%M:%S")
            v = 50 + 10 * math.sin(2 * math.pi * i / 288) + (80 if i == 3000 else 0)
            rows.append((t, f"{v:.6f}"))
        src = _write(tmp_path / "nab.csv", rows)
    with open(src, newline="") as fh:
        data = list(csv.DictReader(fh))
    out = tmp_path / "scored.csv"
    assert score_csv(src, out) == len(data)
    got = [float(r["anomaly_score"]) for r in _read(out)]
    expected = score_series((parse_timestamp(r["timestamp"]), float(r["value"])) for r in data)
    assert got == pytest.approx([round(s, 6) for s in expected], abs=1e-6)  # the NAB benchmark's path
    assert any(s >= ANOMALY_THRESHOLD for s in got)


def test_parse_timestamp_forms() -> None:
    t = 1_404_172_800.0  # 2014-07-01T00:00:00Z
    for text in ("2014-07-01 00:00:00", "2014-07-01T00:00:00", "2014-07-01T00:00:00Z",
                 "2014-07-01T02:00:00+02:00", "1404172800", "1404172800.0"):
        assert parse_timestamp(text) == t, text


@pytest.mark.parametrize(("content", "needle"), [
    ("", "empty file"),
    ("1404172800,1\n", ":1: header must name the columns timestamp,value"),
    ("timestamp,value\n1404172800,1\n1404172860,abc\n", ":3: value 'abc' is not a number"),
    ("timestamp,value\n1404172800,1\nyesterday,2\n", ":3: timestamp 'yesterday' is neither ISO 8601"),
    ("timestamp,value\n1404172800,1\n1404172860,nan\n", ":3: value 'nan' is not a finite number"),
    ("timestamp,value\n1404172800\n", ":2: expected columns timestamp,value"),
])
def test_bad_rows_name_the_line(tmp_path: Path, content: str, needle: str) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.csv"
    with pytest.raises(ValueError, match="bad.csv") as err:
        score_csv(src, out)
    assert needle in str(err.value)
    assert not out.exists(), "a bad input must not leave a partial output"


def test_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("value,timestamp,label\n1.5,1404172800,0\n\n2.5,1404172860,1\n", encoding="utf-8")
    assert score_csv(src, tmp_path / "out.csv") == 2
    assert [(r["timestamp"], r["value"]) for r in _read(tmp_path / "out.csv")] == [
        ("1404172800", "1.5"), ("1404172860", "2.5")]


def test_patterns_file(tmp_path: Path) -> None:
    lines = [
        "Connection to 10.0.0.1 timed out after 30 s",
        "Connection to 10.0.0.2 timed out after 31 s",
        "Failed to write block blk_123 to disk /dev/sda1",
        "Connection to 10.0.0.9 timed out after 5 s",
        "Failed to write block blk_456 to disk /dev/sdb2",
    ]
    src = tmp_path / "app.log"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "clusters.csv"
    assert patterns_file(src, out) == (5, 2)
    rows = _read(out)
    assert list(rows[0]) == ["LineId", "EventId", "EventTemplate"]
    assert [r["LineId"] for r in rows] == ["1", "2", "3", "4", "5"]
    ids = [r["EventId"] for r in rows]
    assert ids[0] == ids[1] == ids[3] and ids[2] == ids[4] and ids[0] != ids[2]
    assert rows[0]["EventTemplate"].startswith("Connection to") and "10.0.0.1" not in rows[0]["EventTemplate"]


def test_patterns_keep_line_numbers_with_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "app.log"
    src.write_text("disk full on /dev/sda\n\nuser 7 logged in\r\n", encoding="utf-8")
    out = tmp_path / "clusters.csv"
    assert patterns_file(src, out) == (3, 3)
    rows = _read(out)
    assert [r["LineId"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["EventTemplate"] == "" and rows[2]["EventTemplate"] == "user <NUM> logged in"
