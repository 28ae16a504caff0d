"""The dashboard in a real browser (Debian's headless Chromium) over a real worker and API process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support import ROOT, FeedServer, Process, rss

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / ".artifacts"
API_READY = "API ready on"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run deploy/install-system-deps.sh")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
def api_process(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Process]]:
    """``jobstream api`` as a subprocess on the test's pipeline, stopped (SIGTERM) at the end."""
    started: list[Process] = []

    def start() -> Process:
        process = Process("api", pipeline_env, tmp_path / f"api-{len(started)}.log")
        started.append(process)
        process.start(API_READY, timeout=60)
        return process

    yield start
    for process in started:
        process.stop()


def broken_feed(prefix: str) -> bytes:
    """Eight good postings and one item without guid or link, which the import must report as a failure."""
    good = rss([{"guid": f"{prefix}-{i}", "title": f"Backend Engineer {i}", "company": "Globex"} for i in range(8)])
    return good.replace(b"</channel>", b"<item><title>Orphan posting</title><description>no id</description></item></channel>")


async def requested_runs(page: Page, action: Awaitable[None]) -> dict[str, str]:
    """Do ``action`` in the page and return the runs its POST /api/import/run requested, by feed URL."""
    async with page.expect_response(lambda r: r.url.endswith("/api/import/run") and r.request.method == "POST") as info:
        await action
    response = await info.value
    assert response.status == 202, await response.text()
    return {run["sourceUrl"]: run["runId"] for run in (await response.json())["runs"]}


async def test_dashboard_runs_an_import_and_follows_it_live(
    start_worker: Callable[..., Process], api_process: Callable[[], Process], pipeline_env: dict[str, str],
    feed_server: FeedServer, browser: Browser,
) -> None:
    start_worker()
    api = api_process()
    tag = uuid.uuid4().hex[:6]
    clean_url = feed_server.put(f"clean-{tag}.xml", rss([{"guid": f"{tag}-{i}", "title": f"Python Developer {i}",
                                                          "company": "Acme"} for i in range(25)]))
    broken_url = feed_server.put(f"broken-{tag}.xml", broken_feed(tag))
    base = f"http://127.0.0.1:{pipeline_env['API_PORT']}"

    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(base + "/")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    await expect(page.locator("#runs-empty")).to_be_visible()

    # register both feeds through the form
    await page.click("a[data-tab=feeds]")
    for url, name in ((clean_url, "Acme careers"), (broken_url, "Globex jobs")):
        await page.fill("#feed-url", url)
        await page.fill("#feed-name", name)
        await page.click("#feed-add")
        await expect(page.locator("#feeds-body tr", has_text=name)).to_have_count(1)
    await expect(page.locator("#feeds-body tr[data-enabled=true]")).to_have_count(2)

    # run the import and watch the rows change without a reload
    await page.click("a[data-tab=imports]")
    await expect(page.locator("#live-status[data-state=live]")).to_have_count(1)
    await page.evaluate("""() => {
        window.__notReloaded = true;
        window.__statuses = {};
        new MutationObserver(() => {
            for (const row of document.querySelectorAll('#runs-body tr[data-run-id]')) {
                const seen = window.__statuses[row.dataset.runId] ||= [];
                if (seen[seen.length - 1] !== row.dataset.status) seen.push(row.dataset.status);
            }
        }).observe(document.getElementById('runs-body'), {childList: true, subtree: true, attributes: true});
    }""")
    runs = await requested_runs(page, page.click("#run-import"))
    assert set(runs) == {clean_url, broken_url}
    run_id = runs[clean_url]
    clean_row = page.locator(f'#runs-body tr[data-run-id="{run_id}"]')
    broken_row = page.locator(f'#runs-body tr[data-run-id="{runs[broken_url]}"]')
    await expect(clean_row).to_have_count(1)
    await expect(broken_row).to_have_count(1)
    await expect(clean_row).to_have_attribute("data-status", "completed", timeout=90_000)
    await expect(broken_row).to_have_attribute("data-status", "partial", timeout=90_000)
    assert await page.evaluate("window.__notReloaded") is True
    statuses = await page.evaluate("window.__statuses")
    assert statuses[run_id][0] in ("pending", "running") and statuses[run_id][-1] == "completed", statuses
    await expect(clean_row.locator("td[data-field=new]")).to_have_text("25")
    await expect(broken_row.locator("td[data-field=failed]")).to_have_text("1")
    await expect(page.locator("#tile-active")).to_have_text("0")
    await expect(page.locator("#tile-jobs")).to_have_text("33")  # the summary follows the stream too
    await expect(page.locator("#tile-latest [data-status]")).to_have_count(1)
    await expect(page.locator("#toasts .toast")).to_have_count(0, timeout=10_000)

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # the detail view of the partial run lists its failure
    await broken_row.click()
    detail = page.locator("dialog#run-detail[open]")
    await expect(detail).to_have_attribute("data-status", "partial")
    await expect(detail.locator("#run-failures tbody tr")).to_have_count(1)
    await expect(detail.locator("#run-failures")).to_contain_text("missing guid and link")
    await expect(detail.locator(".stat[data-kind=new] .stat-value")).to_have_text("8")
    assert "#/runs/" in page.url
    await page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"))
    await detail.locator("[data-close]").click()
    await expect(page.locator("dialog#run-detail[open]")).to_have_count(0)

    # the jobs browser finds the imported postings
    await page.click("a[data-tab=jobs]")
    await page.fill("#jobs-q", "python developer 1")
    await expect(page.locator("#jobs-body tr")).to_have_count(11)  # 1 and 10..19
    await page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"))
    await expect(page.locator("#jobs-page-text")).to_have_text("Page 1")  # a search is not counted unless asked
    # all 33 jobs are two pages of 25: the pager follows the API's cursor and walks back
    await page.fill("#jobs-q", "")
    await expect(page.locator("#jobs-body tr")).to_have_count(25)
    await expect(page.locator("#jobs-page-text")).to_have_text("Page 1 of 2 · 33 jobs")
    await page.click("#jobs-pager [data-page=next]")
    await expect(page.locator("#jobs-body tr")).to_have_count(8)
    await expect(page.locator("#jobs-page-text")).to_have_text("Page 2 of 2 · 33 jobs")
    await expect(page.locator("#jobs-pager [data-page=next]")).to_be_disabled()
    await page.click("#jobs-pager [data-page=prev]")
    await expect(page.locator("#jobs-body tr")).to_have_count(25)
    await expect(page.locator("#jobs-pager [data-page=prev]")).to_be_disabled()

    # the API restarts: the page reconnects by itself and keeps following runs
    api.stop()
    await expect(page.locator("#live-status[data-state=reconnecting]")).to_have_count(1, timeout=20_000)
    api_process()
    await expect(page.locator("#live-status[data-state=live]")).to_have_count(1, timeout=30_000)
    await page.click("a[data-tab=feeds]")
    again = await requested_runs(page, page.locator("#feeds-body tr", has_text="Acme careers")
                                 .locator("button[data-action=run]").click())
    await page.click("a[data-tab=imports]")
    rerun = page.locator(f'#runs-body tr[data-run-id="{again[clean_url]}"]')
    await expect(rerun).to_have_attribute("data-status", "completed", timeout=90_000)
    await expect(rerun.locator(".bar-label")).to_have_text("not modified")  # the feed server answers 304 to its ETag
    assert await page.evaluate("window.__notReloaded") is True
    await page.close()
    errors = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e and "api/import-logs/stream" not in e]
    assert not errors, errors


async def test_dashboard_shows_a_banner_while_runs_wait_for_a_worker(
    start_worker: Callable[..., Process], api_process: Callable[[], Process], pipeline_env: dict[str, str],
    feed_server: FeedServer, browser: Browser,
) -> None:
    """No worker consumes (a fresh clone's workers died at start): the page says so instead of pending forever."""
    api_process()
    tag = uuid.uuid4().hex[:6]
    url = feed_server.put(f"waiting-{tag}.xml", rss([{"guid": f"{tag}-{i}", "title": f"Job {i}"} for i in range(5)]))
    base = f"http://127.0.0.1:{pipeline_env['API_PORT']}"
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(base + "/")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    banner = page.locator("#pipeline-banner")
    await expect(banner).to_be_hidden()  # idle: no worker, but nothing waits for one either
    await page.click("a[data-tab=feeds]")
    await page.fill("#feed-url", url)
    await page.click("#feed-add")
    await expect(page.locator("#feeds-body tr[data-enabled=true]")).to_have_count(1)
    runs = await requested_runs(page, page.click("#run-import"))
    await expect(banner).to_be_visible(timeout=15_000)
    await expect(banner).to_contain_text("The pipeline is not making progress.")
    await expect(banner).to_contain_text(f"no worker in consumer group '{pipeline_env['APP_ID']}'")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-no-worker.png"))

    start_worker()  # the waiting run is consumed, and the banner goes with the next health check
    row = page.locator(f'#runs-body tr[data-run-id="{runs[url]}"]')
    await expect(row).to_have_attribute("data-status", "completed", timeout=90_000)
    await expect(banner).to_be_hidden(timeout=15_000)
    await page.close()
