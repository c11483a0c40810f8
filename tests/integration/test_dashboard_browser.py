"""The dashboard in headless Chromium over state put on the real broker: ranking, timeline with rollback, plots."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_server.auth import Principal, TokenStore
from mcp_server.testing import RunningServer, running_server
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


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is not installed: apt-get install -y chromium")


@pytest.fixture(scope="module")
async def dash(backend: Any) -> AsyncIterator[RunningServer]:
    settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap})
    store = TokenStore({TOKEN: Principal("dash-ops", frozenset({TA, TB}), frozenset({"approver"})),
                        TOKEN_B: Principal("dash-b", frozenset({TB}), frozenset({"reader"}))})
    async with running_server(settings, store) as srv:
        await produce(backend.kafka_bootstrap, demo_state())
        ok = await srv.readmodel.wait_for(lambda v: f"pat-{TB}" in v.patterns
                                          and len(v.timelines.get(f"imp-a-rb-{RUN}", {})) == 6, 20)
        assert ok, "the read model did not materialise the seeded state"
        yield srv


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
            assert await page.locator(f".plot[data-series^='{TA}'] .score-overlay").count() == 1
            assert "Timeout calling <*> after <*> ms" in await page.locator("#patterns").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
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
