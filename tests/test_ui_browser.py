"""`terra ui` in a real browser: Playwright driving Debian's chromium, screenshots in the test's tmp dir.

Skipped, with the reason shown, only where no chromium is installed
(``.ci/run`` installs it with apt-get where it can).
"""

from __future__ import annotations

import os
import shutil

import pytest

import terra
from terra.session import current_store

import _ui_store

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    root = str(tmp_path_factory.mktemp("ui-browser") / "store")
    _ui_store.build(root)
    server = _ui_store.serve(current_store())
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        yield server, page
        browser.close()
    server.shutdown()
    server.server_close()
    terra.configure(quiet=False)


def test_runs_table_filter_run_log_lineage_parent_compare(browser_page, tmp_path):
    server, page = browser_page
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # The runs table, then filtered by status through the form.
    page.goto(server.url)
    assert page.locator("#runs tbody tr").count() == 12
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.select_option("select[name=status]", "failure")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/?*status=failure*")
    statuses = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses == ["failure"]

    # Back to all runs; open the evaluate run tagged best.
    page.goto(server.url + "?tag=best")
    page.click("#runs tbody tr a[href='/run/4']")
    page.wait_for_url("**/run/4")
    assert "epoch" not in page.locator("#log").inner_text()  # evaluate prints nothing
    assert page.locator("svg.lineage").is_visible()
    assert page.locator("svg.lineage a.node").count() == 4
    page.screenshot(path=str(shots / "run.png"), full_page=True)

    # Click through the lineage to the parent that trained the model: its page shows its log.
    page.locator("svg.lineage a.node[data-run='3']").click()
    page.wait_for_url("**/run/3")
    assert "epoch 0: loss" in page.locator("#log").inner_text()
    assert "Run 3 · train" in page.locator("h1").inner_text()

    # The full lineage view, downstream of the dataset.
    page.goto(server.url + "lineage/1")
    page.click("#downstream")
    page.wait_for_url("**/lineage/1?dir=down")
    assert page.locator("svg.lineage a.node").count() == 11
    page.locator("svg.lineage").screenshot(path=str(shots / "lineage.png"))

    # Select two train runs in the table and compare them.
    page.goto(server.url + "?task=train")
    for rid in (3, 6):
        page.check(f"input[name=run][value='{rid}']")
    page.click("#compare")
    page.wait_for_url("**/compare?*")
    assert "Compare 2 runs of train" in page.locator("h1").inner_text()
    assert page.locator("#compare td.diff").count() >= 2
    assert "max abs diff" in page.locator("#compare").inner_text()
    page.screenshot(path=str(shots / "compare.png"), full_page=True)

    for name in ("runs", "run", "lineage", "compare"):
        assert (shots / f"{name}.png").stat().st_size > 1000
    print(f"\nscreenshots: {shots}")
