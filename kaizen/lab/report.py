"""The lab's results: per-case table and totals on the terminal (rich, plain text when piped), and the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from kaizen.lab.scoring import CaseScore

AIOPSLAB = {"source": "AIOpsLab (Chen et al., 2025), best agent", "detection": "100 %",
            "localization": "46–62 %", "root_cause": "36–46 %", "mitigation": "0–55 %"}
COLUMNS = ("case", "kind", "detected", "ttd s", "localized", "top component", "mitigated", "ttm s", "right knob",
           "impr", "kept", "rb", "harmful", "metric pre → fault → end")


def _b(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def rows(scores: list[CaseScore], kinds: dict[str, str]) -> list[list[str]]:
    out = []
    for s in scores:
        fig = "-" if s.pre_fault is None else f"{s.pre_fault:.1f} → {_n(s.faulted and round(s.faulted, 1))} → " \
                                              f"{_n(s.final and round(s.final, 1))}"
        kind = kinds.get(s.name, "")
        if not s.fault:
            kind = f"control ({kind})" if kind else "control"
        out.append([s.name, kind, _b(s.detected), _n(s.time_to_detect), _b(s.localized), s.top_component or "-",
                    _b(s.mitigated), _n(s.time_to_mitigate), _b(s.right_knob), str(s.improvements), str(s.kept),
                    str(s.rollbacks), str(s.harmful_kept), fig])
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def totals_lines(t: dict[str, Any]) -> list[str]:
    ttd, ttm = t["time_to_detect_s"], t["time_to_mitigate_s"]
    return [
        f"cases {t['cases']}: {t['fault_cases']} faults ({t['mitigable_cases']} mitigable by a knob), "
        f"{t['controls']} no-fault controls",
        f"detection {_pct(t['detection_rate'])} · localization {_pct(t['localization_rate'])} · "
        f"mitigation {_pct(t['mitigation_rate'])} of mitigable · right knob {_pct(t['right_knob_rate'])}",
        f"time to detect p50 {_n(ttd['p50'])} s, p90 {_n(ttd['p90'])} s · time to mitigate p50 {_n(ttm['p50'])} s, "
        f"p90 {_n(ttm['p90'])} s",
        f"improvements {t['improvements']}, rollbacks {t['rollbacks']}, harmful changes kept {t['harmful_kept']}, "
        f"improvements started on no-fault controls {t['control_improvements']} "
        f"(insights on controls: {t['control_false_alarms']})",
        f"AIOpsLab best agent: detection {AIOPSLAB['detection']}, localization {AIOPSLAB['localization']}, "
        f"root cause {AIOPSLAB['root_cause']}, mitigation {AIOPSLAB['mitigation']}",
    ]


def print_report(console: Console, scores: list[CaseScore], totals: dict[str, Any], kinds: dict[str, str]) -> None:
    body = rows(scores, kinds)
    if console.is_terminal:
        table = Table(title="kaizen fault lab", title_justify="left")
        for col in COLUMNS:
            table.add_column(col)
        for r in body:
            table.add_row(*r)
        console.print(table)
    else:
        widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(COLUMNS)]
        for r in [list(COLUMNS), *body]:
            console.print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip(),
                          markup=False, highlight=False, soft_wrap=True)
    for line in totals_lines(totals):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def write_json(path: Path, scores: list[CaseScore], totals: dict[str, Any], extra: dict[str, Any]) -> None:
    data = {"totals": totals, "cases": [s.as_dict() for s in scores], "reference": AIOPSLAB, **extra}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
