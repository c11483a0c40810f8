"""The dashboard in headless Chromium over state put on the real broker, judged on what a person sees:
ranking, timeline with rollback and readable (non-overlapping) labels, real dates, the series spiking now
charted, full-width tables, distinct axis labels — and a screenshot in test-artifacts/."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from mcp_server.auth import Principal, TokenStore
from mcp_server.testing import RunningServer, running_server
from streams import topics as t
from streams.records import ImprovementEvent, ImprovementExecution
from streams.settings import Settings
from tests.integration.test_mcp_server import RUN, TA, TB, demo_state, produce


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = f"dash-admin-{RUN}-0123456789"
TOKEN_B = f"dash-tenant-b-{RUN}-0123456789"
SPIKING = f"{TA}|Shop|QueueDepth|Average|service=orders"  # flat for an hour, jumps in the last points
NEW = f"{TA}|Shop|ColdStarts|Average|service=orders"  # appeared a minute ago, already high
BUSY = f"imp-a-busy-{RUN}"  # an improvement whose many steps crowd the end of its timeline


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is not installed: apt-get install -y chromium")


def _series(key: str, metric: str, pts: list[list[float]]) -> tuple[str, str, bytes]:
    return (t.SERIES, key, orjson.dumps({"series": key, "tenant_id": TA, "metric_name": metric,
                                          "component": "orders", "points": pts}))


def crowded_state() -> list[tuple[str, str, bytes]]:
    """What a busy hour looks like: 14 series that peaked 40 minutes ago and are quiet now, one series
    spiking now (modest score), one new series; a pattern stamped in epoch seconds as the patterns agent
    writes it; an improvement whose steps all happen in its last seconds."""
    now = time.time()
    out = []
    for i in range(14):
        pts = [[now - 3600 + 60 * j, 50.0 + (j % 4), 0.99 if j == 20 else 0.02] for j in range(60)]
        out.append(_series(f"{TA}|Shop|Old{i:02d}|Average|", f"Old{i:02d}", pts))
    flat = [[now - 3600 + 60 * j, 20.0 + (j % 3) * 0.1, 0.01] for j in range(57)]
    out.append(_series(SPIKING, "QueueDepth", flat + [[now - 120 + 40 * j, 95.0 + j, 0.4] for j in range(3)]))
    out.append(_series(NEW, "ColdStarts", [[now - 60 + 20 * j, 3.0 + j, None] for j in range(3)]))
    out.append((t.PATTERNS, f"pat-epoch-{RUN}", orjson.dumps({
        "pattern_id": f"pat-epoch-{RUN}", "template": "Connection reset by <*>", "tenant_id": TA,
        "log_group": "/aws/lambda/happyos-orders", "category": "network", "count_window": 12, "total": 40,
        "window_start": now - 600, "first_seen": now - 3000, "last_seen": now - 5, "sample": "Connection reset"})))
    start = datetime.now(UTC) - timedelta(minutes=20)
    steps: list[tuple[str, dict[str, Any], float]] = [("pending", {}, 0), ("generating", {}, 1150),
                                                      ("validating", {}, 1152), ("awaiting_approval", {}, 1154),
                                                      ("deploying", {"stage": "canary"}, 1160)]
    steps += [("monitoring", {"deployment": {"stage": "canary"} if k == 0 else {}}, 1162 + k) for k in range(8)]
    steps += [("monitoring", {"deployment": {"stage": "full"}}, 1175), ("completed", {"verdict": "keep"}, 1190)]
    events = [ImprovementEvent(event_id=f"{BUSY}-e{i}", improvement_id=BUSY, status=s, tenant_id=TA,  # type: ignore[arg-type]
                               timestamp=start + timedelta(seconds=dt), data=d) for i, (s, d, dt) in enumerate(steps)]
    out += [(t.IMPROVEMENT_EVENTS, BUSY, e.to_bytes()) for e in events]
    ex = ImprovementExecution(improvement_id=BUSY, status="completed", tenant_id=TA, verdict="keep", history=events)
    out.append((t.IMPROVEMENT_STATE, BUSY, ex.to_bytes()))
    return out


@pytest.fixture(scope="module")
async def dash(backend: Any) -> AsyncIterator[RunningServer]:
    settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap})
    store = TokenStore({TOKEN: Principal("dash-ops", frozenset({TA, TB}), frozenset({"approver"})),
                        TOKEN_B: Principal("dash-b", frozenset({TB}), frozenset({"reader"}))})
    async with running_server(settings, store) as srv:
        await produce(backend.kafka_bootstrap, demo_state() + crowded_state())
        ok = await srv.readmodel.wait_for(lambda v: f"pat-{TB}" in v.patterns and NEW in v.series
                                          and len(v.timelines.get(f"imp-a-rb-{RUN}", {})) == 6
                                          and len(v.timelines.get(BUSY, {})) == 15, 30)
        assert ok, "the read model did not materialise the seeded state"
        yield srv


def _overlaps(boxes: list[dict[str, float]]) -> list[tuple[int, int]]:
    bad = []
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes[i + 1:], i + 1):
            if a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and \
                    a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]:
                bad.append((i, j))
    return bad


async def test_dashboard_shows_ranking_timeline_rollback_and_plots(dash: RunningServer) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1500})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{dash.url}/?token={TOKEN}")
            await page.wait_for_selector(f"tr.opportunity[data-id='opp-a-crit-{RUN}']", timeout=15_000)
            ranking = await page.eval_on_selector_all(
                "tr.opportunity", "rows => rows.map(r => r.getAttribute('data-id'))")
            mine = [r for r in ranking if r.endswith(RUN)]
            assert mine.index(f"opp-b-{RUN}") < mine.index(f"opp-a-high-{RUN}") < mine.index(f"opp-a-med-{RUN}")
            assert mine.index(f"opp-a-crit-{RUN}") < mine.index(f"opp-a-high-{RUN}")  # critical severity first
            row = page.locator(f".tl-row[data-id='imp-a-rb-{RUN}']")
            await row.wait_for(timeout=10_000)
            assert await row.locator(".rollback-mark").count() == 1
            assert await row.locator(".canary-mark").count() == 1
            assert "verdict degraded" in (await row.inner_text())
            assert await page.locator(f".plot[data-series^='{TA}'] .anomaly").count() >= 1
            assert await page.locator(f".plot[data-series^='{TA}'] .score-overlay").count() >= 1
            assert "Timeout calling <*> after <*> ms" in await page.locator("#patterns").inner_text()
            await page.locator(f".tl-row[data-id='{BUSY}']").wait_for(timeout=10_000)

            # Times are real dates: every rendered <time> (pattern "last seen", timeline starts) after 2000.
            stamps = await page.eval_on_selector_all("time", "ts => ts.map(t => [t.getAttribute('datetime'), "
                                                              "t.textContent])")
            assert len(stamps) >= 4, stamps
            for iso, text in stamps:
                assert int(iso[:4]) >= 2000 and int(text[:4]) >= 2000, (iso, text)
            body = await page.locator("body").inner_text()
            assert not re.search(r"\b19\d\d-\d\d-\d\d\b", body), "a date before 2000 is shown"
            epoch_row = page.locator("tr.pattern", has_text="Connection reset by <*>")
            assert str(datetime.now().year) in await epoch_row.locator("td.when").inner_text()

            # The timeline can be read: no two labels of a row overlap (bounding boxes in the page).
            rows = await page.eval_on_selector_all(".tl-row", "rows => rows.map(r => [r.dataset.id, "
                                                   "[...r.querySelectorAll('.tl-label')].map(l => {"
                                                   "const b = l.getBoundingClientRect(); "
                                                   "return {x: b.x, y: b.y, width: b.width, height: b.height}; })])")
            busy = dict(rows)[BUSY]
            assert len(busy) >= 6, busy  # pending … completed: each change of state labelled once
            for rid, boxes in rows:
                assert not _overlaps(boxes), f"timeline labels overlap in {rid}: {boxes}"

            # What is charted is what changes now: the spiking and the new series, not only old peaks.
            charted = await page.eval_on_selector_all(".plot", "ps => ps.map(p => [p.dataset.series, "
                                                      "p.dataset.reason])")
            reasons = dict(charted)
            assert len(charted) == 12
            assert reasons.get(SPIKING) == "spiking", charted
            assert reasons.get(NEW) == "new", charted
            assert not any(r for k, r in charted if "|Old" in k), "a series quiet for 40 minutes is not 'spiking'"
            # Axis values of a plot are distinct numbers (no "0.2 / 0.2").
            axes = await page.eval_on_selector_all(".plot", "ps => ps.map(p => [...p.querySelectorAll("
                                                   "'.axis-value')].map(a => a.textContent))")
            assert all(len(set(a)) == 3 for a in axes), axes
            # Tables use the page's width.
            widths = await page.evaluate("() => ['opportunities', 'patterns'].map(id => "
                                         "document.getElementById(id).getBoundingClientRect().width / "
                                         "document.getElementById('main').getBoundingClientRect().width)")
            assert all(w > 0.9 for w in widths), widths
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
            assert not errors, errors

            scoped = await browser.new_page()
            await scoped.goto(f"{dash.url}/?token={TOKEN_B}")
            await scoped.wait_for_selector(f"tr.opportunity[data-id='opp-b-{RUN}']", timeout=15_000)
            assert await scoped.locator(f"tr.opportunity[data-id='opp-a-crit-{RUN}']").count() == 0
            assert await scoped.locator(f".tl-row[data-id='imp-a-rb-{RUN}']").count() == 0

            refused = await browser.new_page()
            await refused.goto(f"{dash.url}/?token=wrong-token")
            await refused.wait_for_selector("#login:not([hidden])", timeout=10_000)
            assert "401" in await refused.locator("#login-error").inner_text()
        finally:
            await browser.close()
