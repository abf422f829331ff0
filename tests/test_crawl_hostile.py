"""The Hugging Face crawler against a hostile Hub (the imitation's hostile mode, on 127.0.0.1).

Bad listing items, pagination loops, huge and slow answers, endless rate limits and ids with
newlines: each ends in a recorded failure or a one-line error, nothing is lost, and the rest of
the work is done.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_one_line_error, record_crawler_waits
from hub_imitation import MODEL_INFO, HubImitation, hub, hub_server  # noqa: F401 - hub and hub_server are fixtures
from hubindex.index import Index
from hubindex_plugins import crawl_hf
from hubindex_plugins.crawl_hf import BadAnswer, HfCrawler, _read_capped

# Seven repos, listed by downloads in pages of three; the names say what a test makes of them.
REPOS = ["acme/first", "acme/garbage-date", "acme/second", "acme/number-sha", "acme/list-item",
         "acme/odd-types", "acme/third"]
PEAK_RSS_LIMIT_MB = 300


def populate(hub: HubImitation) -> None:
    for rank, repo_id in enumerate(REPOS):
        hub.add_repo(repo_id, downloads=1000 - 10 * rank)


def crawl(hubindex: Any, hub: HubImitation, *args: str) -> Any:
    return hubindex("crawl", "hf", "--endpoint", hub.url, *args)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def query(index: Index, sql: str) -> list[dict[str, Any]]:
    with index.open_catalog(read_only=True) as catalog:
        cur = catalog.conn.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def checkpoints(index: Index) -> dict[str, dict[str, Any]]:
    return {r["checkpoint_id"]: r for r in query(index, "SELECT * FROM checkpoints")}


def failures(index: Index) -> list[dict[str, Any]]:
    return query(index, "SELECT * FROM failures ORDER BY failure_id")


def runs(index: Index) -> list[dict[str, Any]]:
    return query(index, "SELECT * FROM crawl_runs ORDER BY run_id")


def assert_one_line_each(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for column in ("subject", "kind", "message"):
            assert "\n" not in row[column] and "\r" not in row[column], row


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The crawler's retry waits, recorded instead of slept."""
    return record_crawler_waits(monkeypatch)


# ---------------------------------------------------------------------------- listing items


def test_bad_listing_items_are_failures_and_the_crawl_goes_on(
    hub: HubImitation, hubindex: Any, index: Index
) -> None:
    populate(hub)
    hub.hostile_item("acme/garbage-date", lastModified="garbage")
    hub.hostile_item("acme/number-sha", sha=12345)  # a number where a string belongs
    hub.hostile_item("acme/list-item", replacement=["acme/list-item", 1])  # a list where an object belongs
    # Fields that only describe a repo: odd types are stored as NULL, the repo is crawled.
    hub.hostile_item("acme/odd-types", downloads="many", tags={"a": 1}, pipeline_tag=7, private="no")

    result = ok(crawl(hubindex, hub))
    assert "7 seen, 4 added, 0 changed, 0 unchanged, 3 failed, 4 metadata fetches" in result.stdout
    good = {"hf:acme/first", "hf:acme/second", "hf:acme/odd-types", "hf:acme/third"}
    assert set(checkpoints(index)) == good
    assert all(row["metadata_sha"] == row["sha"] for row in checkpoints(index).values())
    rows = failures(index)
    assert [(f["subject"], f["kind"]) for f in rows] == [
        ("hf:acme/garbage-date", "bad-listing-item"),
        ("hf:acme/number-sha", "bad-listing-item"),
        ("listing item 5", "bad-listing-item"),
    ]
    assert "garbage" in rows[0]["message"]
    assert rows[1]["message"] == "'sha' is a number, not a string"
    assert rows[2]["message"] == "the item is a list, not an object"
    assert_one_line_each(rows)
    assert runs(index)[0]["status"] == "completed"
    assert sorted(hub.model_info_ids()) == sorted(g[3:] for g in good)

    # The next run works too: same failures (updated, not added), nothing fetched again.
    hub.clear_log()
    result = ok(crawl(hubindex, hub))
    assert "7 seen, 0 added, 0 changed, 4 unchanged, 3 failed, 0 metadata fetches" in result.stdout
    assert len(failures(index)) == 3 and hub.count(MODEL_INFO) == 0

    # Once the Hub lists them properly, they are crawled and their failures resolved.
    hub.recover()
    hub.clear_log()
    ok(crawl(hubindex, hub))
    assert sorted(hub.model_info_ids()) == ["acme/garbage-date", "acme/list-item", "acme/number-sha"]
    assert len(checkpoints(index)) == 7
    assert [f["resolved_at"] is not None for f in failures(index)] == [True, True, False]  # no repo to resolve it


# ------------------------------------------------------------------------------- pagination


@pytest.mark.parametrize("link", ["self", "elsewhere"])
def test_pagination_loop_or_foreign_link_ends_the_listing(
    hub: HubImitation, hubindex: Any, index: Index, link: str
) -> None:
    populate(hub)
    # 100 times, not forever: a crawler that follows the loop ends too (and fails below).
    if link == "self":
        hub.self_link("list_page", times=100)
    else:
        hub.link_to("list_page", "http://192.0.2.1:9/api/models?cursor=x", times=100)

    started = time.monotonic()
    result = crawl(hubindex, hub)
    kind = "pagination-loop" if link == "self" else "foreign-link"
    assert_one_line_error(result, f"listing models from {hub.url} failed ({kind}): page 2 links", exit_code=1)
    assert time.monotonic() - started < 5
    assert len(hub.listing_pages()) == 2  # the first page and the one that links badly
    assert sorted(checkpoints(index)) == sorted(f"hf:{r}" for r in REPOS[:6])  # both pages kept
    (run,) = runs(index)
    assert run["status"] == "failed" and kind in run["error"]

    # The next run lists again (resuming the failed run), and fetches nothing it has.
    hub.recover()
    hub.clear_log()
    result = ok(crawl(hubindex, hub))
    assert "(resumed run 1)" in result.stdout and hub.model_info_ids() == ["acme/third"]


def test_listing_is_bounded_in_pages(
    hub: HubImitation, hubindex: Any, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(hub)
    monkeypatch.setattr(crawl_hf, "MAX_LISTING_PAGES", 2)
    result = crawl(hubindex, hub)
    assert_one_line_error(result, "failed (too-many-pages): the listing goes on past 2 pages", exit_code=1)
    assert len(hub.listing_pages()) == 2 and len(checkpoints(index)) == 6


# ---------------------------------------------------------------------------- huge answers


def hubindex_command() -> list[str]:
    script = Path(sys.executable).parent / "hubindex"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hubindex.cli"]


def test_huge_answer_refused_with_bounded_memory(hub: HubImitation, index: Index, tmp_path: Path) -> None:
    """A 1 GB model_info answer: the crawl reads at most MAX_RESPONSE_BYTES of it, and the process stays small."""
    populate(hub)
    hub.huge_body("/api/models/acme/second", size=1 << 30)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [*hubindex_command(), "--index", str(index.root), "crawl", "hf", "--endpoint", hub.url],
            stdout=out, stderr=err, env=env,
        )
        # The peak of the crawl's own memory: VmHWM of its address space, read until it exits.
        # (getrusage's ru_maxrss would also count the copy of this test process it was forked from.)
        peak_kb = 0
        while process.poll() is None and time.monotonic() - started < 120:
            try:
                if b"crawl" in Path(f"/proc/{process.pid}/cmdline").read_bytes():  # exec'd: its own memory
                    status = Path(f"/proc/{process.pid}/status").read_text()
                    peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):  # exiting
                pass
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
        process.wait()
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak_mb = peak_kb / 1024
    print(f"1 GB answer: peak RSS {peak_mb:.0f} MB, {seconds:.1f} s")
    assert process.returncode == 0, stderr
    assert 50 < peak_mb < PEAK_RSS_LIMIT_MB  # above 50 MB: the crawl's memory was read at all
    assert seconds < 30
    assert "7 seen, 7 added, 0 changed, 0 unchanged, 1 failed, 6 metadata fetches" in stdout
    (failure,) = failures(index)
    assert (failure["subject"], failure["kind"]) == ("hf:acme/second", "too-large")
    assert stderr.splitlines() == [f"  failed hf:acme/second: too-large: {failure['message']}"]
    assert hub.count(MODEL_INFO, "acme/second") == 1  # not retried: the next crawl tries again
    assert checkpoints(index)["hf:acme/second"]["metadata_sha"] is None


def test_huge_listing_page_ends_the_listing(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    hub.huge_body("list_page", size=1 << 30)
    result = crawl(hubindex, hub)
    assert_one_line_error(result, "listing models from", "failed (too-large)", exit_code=1)
    assert len(hub.listing_pages()) == 2 and len(checkpoints(index)) == 3


def test_gzip_answer_is_capped_after_decoding() -> None:
    """A small compressed answer cannot inflate past the cap: decoding stops there."""

    class Streamed:
        def __init__(self, body: bytes) -> None:
            self.headers = {"Content-Encoding": "gzip"}
            self.body = body

        def iter_raw(self) -> Any:
            for i in range(0, len(self.body), 65536):
                yield self.body[i:i + 65536]

    bomb = gzip.compress(b"\0" * (16 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(BadAnswer) as refused:
        _read_capped(Streamed(bomb), 1 << 20)
    assert refused.value.kind == "too-large"
    assert _read_capped(Streamed(gzip.compress(b"[1, 2]")), 1 << 20) == b"[1, 2]"


# ---------------------------------------------------------------------------- slow answers


def test_slow_answer_is_cut_at_the_timeout(
    hub: HubImitation, hubindex: Any, index: Index, waits: list[float]
) -> None:
    """One byte a second never trips a per-read timeout; the request's deadline ends it."""
    populate(hub)
    hub.dribble("/api/models/acme/second", interval=1.0, give_up_after=15.0)
    started = time.monotonic()
    result = ok(crawl(hubindex, hub, "--timeout", "2", "--retries", "1"))
    seconds = time.monotonic() - started
    assert 3.8 <= seconds < 6  # two tries of 2 s each (the backoff between them is recorded, not slept)
    assert len(waits) == 1 and hub.count(MODEL_INFO, "acme/second") == 2
    assert "7 seen, 7 added, 0 changed, 0 unchanged, 1 failed, 6 metadata fetches" in result.stdout
    (failure,) = failures(index)
    assert (failure["subject"], failure["kind"]) == ("hf:acme/second", "timeout")
    assert "ReadTimeout" in failure["message"]


# ------------------------------------------------------------------------------ rate limits


def test_endless_rate_limit_stops_the_crawl_and_the_next_run_resumes(
    hub: HubImitation, hubindex: Any, index: Index, waits: list[float]
) -> None:
    populate(hub)
    hub.retry_after("/api/models/acme/number-sha", 999999, times=None)
    started = time.monotonic()
    result = crawl(hubindex, hub, "--max-wait", "5")
    line = assert_one_line_error(result, f"rate limited by {hub.url}", "999999 s", "--max-wait 5 s", exit_code=1)
    assert "run the same command again later to resume" in line
    assert time.monotonic() - started < 5 and waits == []  # stopped at once, no wait
    (run,) = runs(index)
    assert run["status"] == "failed" and run["error"] == line.removeprefix("hubindex: error: ")
    fetched = hub.model_info_ids()  # the repos before it; with requests in flight, maybe some after it
    assert set(REPOS[:3]) <= set(fetched) and "acme/number-sha" not in fetched
    assert failures(index) == []  # a rate limit is not the repo's failure

    hub.recover()
    hub.clear_log()
    result = ok(crawl(hubindex, hub, "--max-wait", "5"))
    assert "(resumed run 1)" in result.stdout
    refetched = hub.model_info_ids()
    assert "acme/number-sha" in refetched and sorted(fetched + refetched) == sorted(REPOS)  # nothing fetched twice
    rows = query(index, "SELECT checkpoint_id, count(*) AS n FROM checkpoints GROUP BY 1")
    assert len(rows) == 7 and all(r["n"] == 1 for r in rows)
    assert all(row["metadata_sha"] == row["sha"] for row in checkpoints(index).values())
    assert runs(index)[1]["status"] == "completed" and runs(index)[1]["resumed_from"] == 1


def test_total_wait_budget_stops_the_crawl(
    hub: HubImitation, hubindex: Any, index: Index, waits: list[float]
) -> None:
    populate(hub)
    hub.retry_after(MODEL_INFO, 3, times=None)  # each wait is short; together they are not
    result = crawl(hubindex, hub, "--max-wait", "5", "--max-total-wait", "10")
    assert_one_line_error(result, f"rate limited by {hub.url}", "--max-total-wait 10 s", "to resume", exit_code=1)
    assert waits == [3.0, 3.0, 3.0]
    assert runs(index)[0]["status"] == "failed"


# ------------------------------------------------------------------------------------ ids


def test_repo_id_with_a_newline_is_refused(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    hub.add_repo("acme/newline\n", downloads=995)
    hub.update_repo("acme/first", card_data={"base_model": "acme/base\nmodel"})  # a card naming a repo
    result = ok(crawl(hubindex, hub))
    assert "8 seen, 7 added" in result.stdout and "1 failed" in result.stdout
    (failure,) = failures(index)
    assert (failure["subject"], failure["kind"]) == ("acme/newline\\n", "invalid-repo-id")
    assert_one_line_each([failure])
    assert result.stderr.splitlines() == [
        "  failed acme/newline\\n: invalid-repo-id: the Hub listed a malformed repo id"]
    assert not any("newline" in cid for cid in checkpoints(index))
    assert not any("newline" in r.path for r in hub.log)  # never asked for
    assert checkpoints(index)["hf:acme/first"]["base_models"] == ["acme/base\\nmodel"]

    hub.clear_log()
    result = crawl(hubindex, hub, "--repo", "acme/x\n")
    assert_one_line_error(result, "malformed repo id 'acme/x\\n'", exit_code=2)
    assert hub.log == []
