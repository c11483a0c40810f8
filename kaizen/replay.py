"""Offline replay (`kaizen score`, `kaizen patterns`): files through the live agents' detector and miner."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from agents.patterns.logic.templates import mine_lines, write_clusters_csv
from agents.scoring.logic.series import SeriesModel

# The metric name the replayed series is modelled as: "other" for the trend rules, so only the
# detector (the part NAB measures) decides the score; the live agent's SeriesModel is used as is.
REPLAY_METRIC = "value"


def parse_timestamp(text: str) -> float:
    """ISO 8601 (naive means UTC; 'T' or space; 'Z' allowed) or epoch seconds -> epoch seconds."""
    s = text.strip()
    if not s:
        raise ValueError("empty timestamp")
    try:
        epoch = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(epoch):
            raise ValueError(f"timestamp {text!r} is not finite")
        return epoch
    try:
        dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is neither ISO 8601 nor epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _parse_value(text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise ValueError(f"value {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"value {text!r} is not a finite number")
    return v


def read_series(path: Path) -> Iterator[tuple[int, str, float, str, float]]:
    """Yield (line number, timestamp text, epoch seconds, value text, value) of a timestamp,value CSV with a header.

    Raises ValueError naming the file and line of the first bad row."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header line 'timestamp,value'")
        names = [h.strip().lower() for h in header]
        if "timestamp" not in names or "value" not in names:
            raise ValueError(f"{path}:1: header must name the columns timestamp,value (got {','.join(header)!r})")
        it, iv = names.index("timestamp"), names.index("value")
        width = max(it, iv) + 1
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank lines carry no point
            if len(row) < width:
                raise ValueError(f"{path}:{line}: expected columns timestamp,value, got {','.join(row)!r}")
            try:
                ts = parse_timestamp(row[it])
                value = _parse_value(row[iv])
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            yield line, row[it].strip(), ts, row[iv].strip(), value


def score_csv(input: Path, output: Path, metric_name: str = REPLAY_METRIC, detector: str = "kaizen") -> int:
    """Score every row of `input` (timestamp,value) in file order with a fresh live series model (the
    detector `detector`: a registry name or River expression, as in KAIZEN_DETECTORS) and write
    timestamp,value,anomaly_score to `output`: the calibrated scores the live agent compares with its
    threshold. Returns the number of rows. The input is fully validated before `output` is written,
    so a bad file leaves no partial output."""
    rows = list(read_series(Path(input)))
    model = SeriesModel.new(metric_name, detector)
    with open(output, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for _line, ts_text, ts, value_text, value in rows:
            score, _findings = model.observe(ts, value)
            writer.writerow([ts_text, value_text, f"{min(1.0, max(0.0, score)):.6f}"])
    return len(rows)


def patterns_file(input: Path, output: Path) -> tuple[int, int]:
    """Mine one log message per line of `input` with the live miner's configuration; write
    LineId,EventId,EventTemplate (LineId from 1) to `output`; returns (lines, patterns)."""
    with open(input, encoding="utf-8", errors="replace", newline="") as fh:
        lines = [ln.rstrip("\r\n") for ln in fh]
    matches = mine_lines(lines)
    write_clusters_csv(matches, output)
    return len(matches), len({m.pattern_id for m in matches})
