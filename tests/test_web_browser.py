"""`hubindex serve` in a real headless Chromium (the distribution's, driven by Playwright):

every page loads with its content, without a console error, a script error or a CSP violation; a
person can go from the checkpoint list to a checkpoint to its nearest neighbour, run a query in
the SQL form, and see (and hover) the kappa heatmap; the hostile checkpoint's id is shown as text
and runs nothing. Every page visited is saved as a screenshot in the artefacts folder
(HUBINDEX_ARTEFACTS, else tests/artefacts/web/), to be looked at.

Chromium is the one `.ci/install` installs from the distribution (/usr/bin/chromium); Playwright's
own browser download is never used. Without it these tests are skipped.
"""

from __future__ import annotations

import io
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(os.environ.get("HUBINDEX_ARTEFACTS") or Path(__file__).parent / "artefacts" / "web")
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 20_000
ZOO_CHECKPOINT = "hf:hubindex-zoo/all-MiniLM-L6-v2"

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: .ci/install installs the distribution's chromium package "
                "(apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras (.ci/install)")

# Every script that runs is a file of the server's; a JSON data block (the corpus page's heatmap
# data) is not run, and must parse as JSON.
EVERY_SCRIPT_IS_THE_SERVERS = """[...document.scripts].every(s => s.type === 'application/json'
    ? (JSON.parse(s.textContent), !s.src) : s.src.startsWith(location.origin + '/static/'))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


# Records each securitypolicyviolation event; Playwright injects it over the DevTools protocol, so the
# page's own CSP (no inline script) does not stop it.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class Tab:
    """A page in its own browser context, with everything that went wrong on it."""

    page: object
    base: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def goto(self, target: str, status: int = 200) -> object:
        response = self.page.goto(self.base + target, wait_until="load")
        assert response is not None and response.status == status, (target, response and response.status)
        if status != 200:
            self.expect_error_status(response.url)
        return response

    def expect_error_status(self, url: str) -> None:
        """Chromium logs a page answered with 4xx as a console error: that one is expected."""
        self.console_errors[:] = [e for e in self.console_errors
                                  if not (e.startswith("error: Failed to load resource: the server responded with a "
                                                       "status of 4") and f"'url': '{url}'" in e)]

    def shoot(self, name: str) -> Path:
        path = ARTEFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    def assert_clean(self) -> None:
        """No console error, script error, CSP violation, dialog or failed request on this tab so far."""
        violations = self.page.evaluate("window.__cspViolations || []")
        assert not violations, violations
        assert not self.console_errors, self.console_errors
        assert not self.page_errors, self.page_errors
        assert not self.dialogs, self.dialogs
        assert not self.failed_requests, self.failed_requests


@pytest.fixture
def tab(browser, web_server) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=True)
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Tab(page, web_server.url)
    page.on("console", lambda m: watched.console_errors.append(f"{m.type}: {m.text} ({m.location})")
            if m.type in ("error", "assert") else None)
    page.on("pageerror", lambda e: watched.page_errors.append(str(e)))

    def on_dialog(dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("requestfailed", lambda r: watched.failed_requests.append(f"{r.method} {r.url}: {r.failure}"))
    try:
        yield watched
    finally:
        context.close()


def fetch_json(base: str, target: str) -> dict:
    with urllib.request.urlopen(base + target, timeout=30) as response:
        return json.load(response)


# ------------------------------------------------------------------------------------ every page


def corpus_target(web_server) -> str:
    """The text corpus's page (its stable NAME@ITEMS URL)."""
    corpora = fetch_json(web_server.url, "/corpora.json")["corpora"]
    (record,) = [c for c in corpora if c["name"] == web_server.names["text_corpus"]]
    return "/corpora/" + quote(record["stable_spec"], safe="@")


PAGES = {
    # name: (target, selector of the main content, text it holds)
    "overview": ("/", "main h1", "The index"),
    "checkpoints-facet-search": ("/checkpoints?" + urlencode({"source": "local", "q": "MiniLM"}),
                                 "#checkpoint-table", ZOO_CHECKPOINT),
    "checkpoints-sorted": ("/checkpoints?sort=top1&per_page=20", "#checkpoint-table", "timm:"),
    "checkpoint": ("/checkpoints/" + ZOO_CHECKPOINT, "#checkpoint-id", ZOO_CHECKPOINT),
    "lineage": ("/lineage/" + ZOO_CHECKPOINT, "main h1", ZOO_CHECKPOINT),
    "corpora": ("/corpora", "#corpus-table", "bbc-news"),
    "corpus": (None, "#corpus-spec", "bbc-news@"),
    "tasks": ("/tasks", "#task-table", "digits"),
    "task": ("/tasks/digits", "#score-table", "hf:hubindex-zoo/"),
    "runs": ("/runs", "#nightly-runs", "#1"),
    "nightly-run": ("/runs/nightly/1", "#stages", ""),
    "failures": ("/failures", "#failure-table", "broken-bert"),
    "sql": ("/sql", "#sql-tables", "checkpoints"),
    "not-found": ("/checkpoints/hf:nobody/nothing", "#error-message", "no checkpoint"),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly(tab: Tab, web_server, name: str) -> None:
    target, selector, expected = PAGES[name]
    target = target or corpus_target(web_server)
    tab.goto(target, status=404 if name == "not-found" else 200)
    content = tab.page.locator(selector)
    assert content.count() >= 1, (name, selector)
    assert content.first.is_visible(), (name, selector)
    assert expected in content.first.inner_text(), (name, content.first.inner_text()[:500])
    if name == "checkpoints-facet-search":
        assert tab.page.locator(".facet[data-facet=source] li.selected").inner_text().startswith("\u2715 local")
        assert int(tab.page.inner_text("#total").replace(",", "")) >= 1
    if name == "lineage":
        assert tab.page.locator("#lineage-graph").is_visible()
        assert tab.page.locator("#lineage-graph a, #lineage-graph text").count() >= 2
    if name == "corpus":
        tab.page.wait_for_selector("#heatmap[data-rendered]")
    # Styled by the server's stylesheet (no CDN, nothing inline).
    assert tab.page.evaluate("[...document.styleSheets].some(s => s.href === location.origin + '/static/style.css' "
                             "&& s.cssRules.length > 10)")
    assert tab.page.evaluate(EVERY_SCRIPT_IS_THE_SERVERS)
    tab.shoot(f"page-{name}")
    tab.assert_clean()


# ------------------------------------------------------------------------------------ browsing


def test_list_to_checkpoint_to_neighbour(tab: Tab) -> None:
    page = tab.page
    tab.goto("/checkpoints")
    tab.shoot("follow-1-list")
    page.fill("#list-form input[name=q]", "all-MiniLM-L6-v2")
    with page.expect_navigation():
        page.press("#list-form input[name=q]", "Enter")
    assert "q=all-MiniLM-L6-v2" in page.url
    tab.shoot("follow-2-search")
    link = page.locator("a.checkpoint-link", has_text=re.compile(f"^{re.escape(ZOO_CHECKPOINT)}$"))
    with page.expect_navigation():
        link.click()
    assert page.url == tab.base + "/checkpoints/" + ZOO_CHECKPOINT
    assert page.inner_text("#checkpoint-id") == ZOO_CHECKPOINT
    tab.shoot("follow-3-checkpoint")
    neighbour = page.locator("a.neighbor-link").first
    neighbour_id = neighbour.inner_text()
    assert neighbour_id and neighbour_id != ZOO_CHECKPOINT
    with page.expect_navigation():
        neighbour.click()
    assert page.url == tab.base + "/checkpoints/" + quote(neighbour_id, safe="/:@")
    assert page.inner_text("#checkpoint-id") == neighbour_id
    assert page.title().startswith(neighbour_id)
    # The neighbour lists the first checkpoint back among its own neighbours (kappa is symmetric).
    assert ZOO_CHECKPOINT in page.locator("a.neighbor-link").all_inner_texts()
    tab.shoot("follow-4-neighbour")
    # Its family graph is one click away, and the JSON form of the page is JSON.
    with page.expect_navigation():
        page.click("#lineage-link")
    assert page.url.startswith(tab.base + "/lineage/")
    tab.shoot("follow-5-lineage")
    tab.assert_clean()


def test_sql_form(tab: Tab) -> None:
    page = tab.page
    tab.goto("/sql")
    query = "SELECT source, count(*) AS n FROM checkpoints GROUP BY source ORDER BY source"
    page.fill("#sql-input", query)
    with page.expect_navigation() as navigation:
        page.click("#sql-run")
    assert navigation.value.status == 200
    assert "sql=" in page.url  # the URL of a query is its permanent link
    assert page.input_value("#sql-input") == query
    header = page.locator("#sql-result thead th").all_inner_texts()
    assert header == ["source", "n"]
    cells = [row.locator("td").all_inner_texts() for row in page.locator("#sql-result tbody tr").all()]
    expected = fetch_json(tab.base, "/sql.json?" + urlencode({"sql": query}))["rows"]
    assert cells == [[source, f"{n:,}"] for source, n in expected]
    assert [row[0] for row in cells] == ["local", "timm"]
    assert "2 rows" in page.inner_text("#sql-summary")
    tab.shoot("sql-1-result")
    # A write through the form is refused like `hubindex sql` refuses it, with the message on the page.
    page.fill("#sql-input", "DROP TABLE checkpoints")
    with page.expect_navigation() as navigation:
        page.click("#sql-run")
    assert navigation.value.status == 400
    assert "read-only" in page.inner_text("#error-message")
    tab.shoot("sql-2-refused")
    tab.expect_error_status(page.url)
    tab.assert_clean()
    assert fetch_json(tab.base, "/sql.json?" + urlencode({"sql": "SELECT count(*) AS n FROM checkpoints"}))["rows"][0][0] > 1000


# ------------------------------------------------------------------------------------ the heatmap


def colour_counts(png: bytes) -> list[tuple[int, tuple[int, int, int]]]:
    """(pixels, colour) for every colour of a PNG, most frequent first."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sorted(image.getcolors(maxcolors=image.width * image.height), reverse=True)


@pytest.mark.parametrize("corpus", ["text_corpus", "image_corpus"])
def test_heatmap_renders_and_answers_the_pointer(tab: Tab, web_server, corpus: str) -> None:
    page = tab.page
    tab.goto("/corpora")
    with page.expect_navigation():
        page.locator("a.corpus-link", has_text=re.compile(f"^{re.escape(web_server.names[corpus])}@")).click()
    heatmap = page.wait_for_selector("#heatmap[data-rendered]")
    shown = int(heatmap.get_attribute("data-rendered"))
    assert shown >= 4, shown
    assert heatmap.get_attribute("data-order") == "dendrogram"
    assert heatmap.get_attribute("data-error") is None
    assert page.locator("#heatmap-dendrogram polyline").count() == shown - 1  # a tree over n leaves
    png = page.locator("#heatmap-svg").screenshot(path=str(ARTEFACTS / f"heatmap-{corpus}.png"))
    colours = len(colour_counts(png))
    assert colours >= 50, colours  # viridis cells, dendrogram, labels: not a blank or one-colour box
    # The cells themselves: painted in many colours (not blank, not all "missing" grey), none dominating.
    cells_png = page.locator("#heatmap-cells").screenshot(path=str(ARTEFACTS / f"heatmap-{corpus}-cells.png"))
    counts = colour_counts(cells_png)
    pixels = sum(n for n, _ in counts)
    assert len(counts) >= shown, counts[:10]
    assert counts[0][0] / pixels < 0.5, counts[:5]
    assert all(colour not in ((255, 255, 255), (208, 208, 208)) for _, colour in counts[:3]), counts[:5]
    # Hover a cell off the diagonal: the tooltip names both checkpoints and the kappa value.
    cells = page.locator("#heatmap-cells")
    box = cells.bounding_box()
    step = box["width"] / shown
    page.mouse.move(box["x"] + 1.5 * step, box["y"] + 0.5 * step)
    tooltip = page.locator("#heatmap-tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert "kappa" in text and " x " in text, text
    value = float(re.search(r"kappa (-?[0-9.]+)", text).group(1))
    assert -1.0 <= value <= 1.0
    tab.shoot(f"heatmap-{corpus}-hover")
    # The same value in the page's JSON: the cell under the pointer is the one named.
    data = fetch_json(tab.base, page.url.removeprefix(tab.base) + ".json")
    ids = data["ordered_ids"]
    first, second = text.split(": kappa")[0].split(" x ")
    assert round(data["matrix"][ids.index(first)][ids.index(second)], 4) == value
    # Controls: alphabetical order redraws; the newest MMI selection can be outlined.
    page.select_option("#heatmap-order", "alphabetical")
    page.wait_for_selector("#heatmap[data-order=alphabetical]")
    if page.locator("#heatmap-highlight").count():
        page.check("#heatmap-highlight")
        page.wait_for_function("document.getElementById('heatmap').dataset.highlighted !== '0'")
        assert int(heatmap.get_attribute("data-highlighted")) >= 1
    tab.shoot(f"heatmap-{corpus}-alphabetical")
    # A click on a cell opens the column's checkpoint.
    box = cells.bounding_box()
    with page.expect_navigation():
        page.mouse.click(box["x"] + 0.5 * step, box["y"] + 0.5 * step)
    assert page.url.startswith(tab.base + "/checkpoints/")
    assert page.inner_text("#checkpoint-id") in ids
    tab.assert_clean()


# ------------------------------------------------------------------------------------ hostile text


def test_hostile_checkpoint_is_text_and_runs_nothing(tab: Tab, web_server) -> None:
    page = tab.page
    hostile = web_server.names["hostile_folder"]
    tab.goto("/checkpoints?q=evil")
    tab.shoot("hostile-1-list")
    link = page.locator("a.checkpoint-link", has_text=hostile)
    assert link.count() == 1
    assert hostile in link.inner_text()
    with page.expect_navigation():
        link.click()
    heading = page.inner_text("#checkpoint-id")
    assert heading.endswith(hostile), heading
    body = page.inner_text("body")
    assert "<script>alert('x')</script>" in body
    assert "<img src=x onerror=alert('lic')>" in body  # its card's license, shown as text
    # Nothing of it became markup: no script but the server's, no image, no <b>.
    assert page.evaluate(EVERY_SCRIPT_IS_THE_SERVERS)
    assert page.locator("main img, main b, main script").count() == 0
    tab.shoot("hostile-2-checkpoint")
    with page.expect_navigation():
        page.click("#lineage-link")
    assert hostile in page.inner_text("main h1")
    tab.shoot("hostile-3-lineage")
    page.wait_for_timeout(300)  # time for anything that would fire late
    assert tab.dialogs == []
    tab.assert_clean()
