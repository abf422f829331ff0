"""`hubindex nightly`: runs as a real subprocess against the Hub imitation and a part of the real zoo.

The scenario: a reference index gets one uninterrupted run, then a second one that must do
nothing (no downloads, no model forwards). A second index gets a run killed (SIGKILL) during the
crawl, a run killed during the probe stage - while it is blocked there, `hubindex sql` answers
from the snapshot and a concurrent run is refused - and a run that completes the work; its
catalog and store must then match the reference. The moments to kill are taken from the Hub
imitation itself: a request the run must make is held until the test lets it go.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from conftest import Zoo, assert_one_line_error, run_hubindex

from hub_imitation import MODEL_INFO, RESOLVE, HubImitation, HubServer, hub_server  # noqa: F401 - fixture
from hubindex.index import Index
from hubindex.plugins import DEFAULT_PLUGINS

ZOO = "hf:hubindex-zoo/"
TEXT_MEMBERS = ("paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2-first3")
BROKEN = "zz-org/slow-bert"  # sorts after the zoo's ids: probed last
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "nightly" / "nightly.toml"
WAIT_S = 180.0


# ---------------------------------------------------------------------------------- the Hub


@dataclass
class Gate:
    """Holds requests of one kind for one repo until released; says when the first one arrived."""

    kind: str
    repo_id: str
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


class GatedHub(HubImitation):
    """The Hub imitation, plus gates that hold chosen requests (the run is then blocked mid-stage)."""

    def __init__(self) -> None:
        super().__init__(page_size=3)
        self.gates: list[Gate] = []

    def gate(self, kind: str, repo_id: str) -> Gate:
        gate = Gate(kind, repo_id)
        self.gates.append(gate)
        return gate

    def open_gates(self) -> None:
        for gate in self.gates:
            gate.released.set()
        self.gates = []

    def _take_fault(self, kind: str, path: str, query: str) -> Any:
        for gate in list(self.gates):
            if gate.kind == kind and f"/{gate.repo_id}/" in f"{path}/":
                gate.arrived.set()
                gate.released.wait(WAIT_S)
        return super()._take_fault(kind, path, query)


@pytest.fixture(scope="module")
def hub(hub_server: HubServer) -> Iterator[GatedHub]:  # noqa: F811 - hub_server is a fixture
    """Two Hub models: one no probe takes, one whose weights do not load (a failing checkpoint)."""
    with hub_server.serve(GatedHub()) as imitation:
        imitation.add_repo("acme/vit-tiny", downloads=50)
        imitation.add_repo(BROKEN, pipeline_tag="fill-mask", model_type="bert", license="mit", downloads=10)
        yield imitation
        imitation.open_gates()


# ---------------------------------------------------------------------------------- running


def hubindex_command() -> list[str]:
    script = Path(sys.executable).parent / "hubindex"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hubindex.cli"]


@dataclass
class Setup:
    config: Path
    env: dict[str, str]
    task_csv: Path

    def start(self, index_dir: Path, *args: str) -> subprocess.Popen[str]:
        # Each index has its own Hugging Face cache, as on separate machines: a cache shared with
        # another index would answer downloads without asking the Hub.
        env = dict(self.env, HF_HOME=str(index_dir.parent / "hf-home"))
        return subprocess.Popen(
            [*hubindex_command(), "--index", str(index_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

    def nightly(self, index_dir: Path) -> subprocess.Popen[str]:
        return self.start(index_dir, "nightly", "--config", str(self.config))

    def run(self, index_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        process = self.start(index_dir, *args)
        out, err = process.communicate(timeout=WAIT_S)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def new_index(self, folder: Path) -> Path:
        """An index with the labeled task the configuration scores."""
        folder.mkdir(parents=True, exist_ok=True)  # `task add` adds to an index, it does not start one
        result = run_hubindex("task", "add", "news", "--csv", str(self.task_csv), "--text-col", "text",
                              "--label-col", "label", index_dir=folder)
        assert result.exit_code == 0, result.stderr
        return folder


def write_task_csv(path: Path) -> Path:
    """A small two-class text task: business words against sports words."""
    business = "market shares profit bank economy growth trade prices investors stocks".split()
    sport = "match team goal player season coach league win score fans".split()
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for i in range(40):
        words, label = (business, "business") if i % 2 == 0 else (sport, "sport")
        lines.append(" ".join(rng.choice(words, 8)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(zoo: Zoo, hub: GatedHub, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("nightly-setup")
    members = ", ".join(f"'{ZOO}{m}'" for m in TEXT_MEMBERS)
    config = folder / "nightly.toml"
    config.write_text(f"""
[[crawl]]
source = "local"
path = "{zoo.out}"

[[crawl]]
source = "hf"
endpoint = "{hub.url}"
retries = 0

[probe]
corpora = [{{ name = "bbc-news", max_items = 300 }}]
where = "checkpoint_id IN ({members}) OR starts_with(checkpoint_id, 'hf:zz-org/')"

[score]
tasks = ["news"]
metrics = ["knn", "logme"]
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBINDEX_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1",
               HUBINDEX_LOAD_PLUGINS=",".join(DEFAULT_PLUGINS), PYTHONUNBUFFERED="1")
    return Setup(config, env, write_task_csv(folder / "news.csv"))


def wait_for(gate: Gate, process: subprocess.Popen[str]) -> None:
    """Until the run makes the gated request (it is then blocked there), or fail if it ended first."""
    deadline = time.monotonic() + WAIT_S
    while not gate.arrived.wait(0.2):
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before the {gate.kind} request for {gate.repo_id}: {err}\n{out}")
        assert time.monotonic() < deadline, f"no {gate.kind} request for {gate.repo_id}"


def kill(process: subprocess.Popen[str], hub: GatedHub) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=WAIT_S)
    assert process.returncode == -signal.SIGKILL
    hub.open_gates()


def query(index_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        return catalog.conn.execute(sql).fetchall()


def stage_details(index_dir: Path, run_id: int, stage: str) -> dict[str, Any]:
    (details,) = query(index_dir, f"SELECT details FROM nightly_stages WHERE run_id = {run_id} AND stage = '{stage}'")[0]
    return json.loads(details)


@dataclass
class Timed:
    result: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="module")
def reference(setup: Setup, hub: GatedHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index with one uninterrupted run, then a second run with the Hub unchanged."""
    index_dir = setup.new_index(tmp_path_factory.mktemp("reference") / "index")
    started = time.perf_counter()
    first = Timed(setup.run(index_dir, "nightly", "--config", str(setup.config)), time.perf_counter() - started)
    assert first.result.returncode == 0, first.result.stderr
    hub.clear_log()
    started = time.perf_counter()
    second = Timed(setup.run(index_dir, "nightly", "--config", str(setup.config)), time.perf_counter() - started)
    assert second.result.returncode == 0, second.result.stderr
    return {"index_dir": index_dir, "first": first, "second": second, "requests": list(hub.log)}


@pytest.fixture(scope="module")
def killed(setup: Setup, hub: GatedHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index whose runs are killed during the crawl, then during the probe stage, then completed."""
    index_dir = setup.new_index(tmp_path_factory.mktemp("killed") / "index")
    seen: dict[str, Any] = {"index_dir": index_dir}

    # 1. Killed while the Hub crawl waits for a model_info answer.
    gate = hub.gate(MODEL_INFO, BROKEN)
    process = setup.nightly(index_dir)
    wait_for(gate, process)
    kill(process, hub)

    # 2. Killed while the probe stage downloads the broken checkpoint (the zoo members are done).
    gate = hub.gate(RESOLVE, BROKEN)
    process = setup.nightly(index_dir)
    wait_for(gate, process)
    started = time.perf_counter()
    seen["sql"] = setup.run(index_dir, "sql", "SELECT count(*) AS n FROM checkpoints", "--format", "json")
    seen["sql_seconds"] = time.perf_counter() - started
    seen["concurrent"] = setup.run(index_dir, "nightly", "--config", str(setup.config))
    seen["blocked_pid"] = process.pid
    kill(process, hub)

    # 3. Runs to completion.
    seen["completed"] = setup.run(index_dir, "nightly", "--config", str(setup.config))
    assert seen["completed"].returncode == 0, seen["completed"].stderr
    return seen


# ---------------------------------------------------------------------------------- the scenario


def test_second_run_downloads_nothing_and_runs_no_model(reference: dict[str, Any]) -> None:
    index_dir = reference["index_dir"]
    first, second = reference["first"], reference["second"]
    print(f"nightly first run {first.seconds:.1f} s, no-op run {second.seconds:.1f} s")
    assert "hubindex nightly run 1: completed" in first.result.stdout
    assert "hubindex nightly run 2: completed" in second.result.stdout
    requests = reference["requests"]
    # Listing the Hub is how a crawl sees that nothing changed; nothing else is asked for.
    assert [r for r in requests if r.kind in (MODEL_INFO, RESOLVE)] == []
    probe = stage_details(index_dir, 2, "probe")["parts"][0]
    assert (probe["probed"], probe["reused"], probe["to_probe"], probe["up_to_date"]) == (0, 0, 0, 2)
    assert probe["skipped_failed"] == 1  # the broken checkpoint is not retried at the same revision
    score = stage_details(index_dir, 2, "score")["parts"][0]
    assert (score["embedded"], score["computed"], score["current"]) == (0, 0, 4)
    kappa = stage_details(index_dir, 2, "kappa")["parts"][0]
    assert (kappa["pairs_computed"], kappa["fingerprints_added"]) == (0, 0)
    rows = query(index_dir, "SELECT stage, added, changed, failed FROM nightly_stages WHERE run_id = 2 ORDER BY stage")
    assert rows == [("crawl", 0, 0, 0), ("kappa", 0, 0, 0), ("probe", 0, 0, 0), ("score", 0, 0, 0)]
    assert second.seconds < 30, second.seconds  # seconds, not minutes: no model is loaded


def test_first_run_indexes_probes_relates_and_scores(reference: dict[str, Any]) -> None:
    index_dir = reference["index_dir"]
    rows = dict(query(index_dir, "SELECT stage, added FROM nightly_stages WHERE run_id = 1"))
    assert rows == {"crawl": 12, "probe": 2, "kappa": 3, "score": 4}  # 10 + 2 checkpoints; 1 pair + 2 fingerprints
    report = (index_dir / "reports" / "nightly-1.txt").read_text()
    assert report == query(index_dir, "SELECT summary FROM nightly_runs WHERE run_id = 1")[0][0]
    assert report == reference["first"].result.stdout


def test_failing_checkpoint_is_recorded_linked_and_skipped(reference: dict[str, Any]) -> None:
    index_dir = reference["index_dir"]
    sha = query(index_dir, f"SELECT sha FROM checkpoints WHERE checkpoint_id = 'hf:{BROKEN}'")[0][0]
    failures = query(index_dir, "SELECT subject, stage, kind, nightly_run_id, revision FROM failures "
                                "WHERE resolved_at IS NULL")
    assert failures == [(f"hf:{BROKEN}", "probe", "load-error", 1, sha)]
    assert stage_details(index_dir, 1, "score")["parts"][0]["skipped_failed"] == 1
    assert query(index_dir, "SELECT run_id, status FROM nightly_runs ORDER BY run_id") == [
        (1, "completed"), (2, "completed")]


def test_sql_answers_from_the_snapshot_while_a_run_writes(killed: dict[str, Any]) -> None:
    result = killed["sql"]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 12}]  # the snapshot published after the crawl stage
    (line,) = result.stderr.splitlines()
    assert f"the catalog is being written by nightly run 2 (pid {killed['blocked_pid']} on " in line
    assert "answering from its read snapshot of " in line
    assert killed["sql_seconds"] < 30


def test_concurrent_run_is_refused_with_the_holder(killed: dict[str, Any]) -> None:
    result = killed["concurrent"]
    assert result.returncode == 3
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hubindex: error: another nightly run 2 (pid {killed['blocked_pid']} on ")
    assert line.endswith(f"holds {killed['index_dir'] / 'nightly.lock'}; wait for it to finish")


def test_killed_runs_are_completed_like_an_uninterrupted_run(killed: dict[str, Any], reference: dict[str, Any]) -> None:
    index_dir, reference_dir = killed["index_dir"], reference["index_dir"]
    assert query(index_dir, "SELECT run_id, status FROM nightly_runs ORDER BY run_id") == [
        (1, "interrupted"), (2, "interrupted"), (3, "completed")]
    assert query(index_dir, "SELECT status FROM crawl_runs WHERE status = 'running'") == []
    # Run 1 died in the crawl stage and run 2 in the probe stage: neither recorded those stages.
    assert query(index_dir, "SELECT run_id, stage FROM nightly_stages WHERE run_id < 3 ORDER BY ALL") == [
        (2, "crawl")]
    for sql in (
        "SELECT checkpoint_id, sha, local_sha FROM checkpoints ORDER BY ALL",
        "SELECT checkpoint_id, checkpoint_sha, corpus_hash, layer, pooling, n_items, n_kept, dim, path "
        "FROM embeddings ORDER BY ALL",
        "SELECT corpus_hash, checkpoint_a, checkpoint_b, sha_a, sha_b FROM kappa ORDER BY ALL",
        "SELECT corpus_hash, checkpoint_id, checkpoint_sha FROM fingerprints ORDER BY ALL",
        "SELECT task, checkpoint_id, metric, checkpoint_sha FROM task_scores ORDER BY ALL",
        "SELECT subject, stage, kind, revision FROM failures WHERE resolved_at IS NULL ORDER BY ALL",
    ):
        assert query(index_dir, sql) == query(reference_dir, sql), sql
    values = "SELECT value FROM kappa ORDER BY checkpoint_a, checkpoint_b"
    np.testing.assert_allclose(query(index_dir, values), query(reference_dir, values), atol=1e-6)
    assert_store_is_whole(index_dir)


def assert_store_is_whole(index_dir: Path) -> None:
    """No duplicate rows, every registered file is the one registered, every FAISS file loads."""
    import faiss

    from hubindex.store import file_sha256

    for table, key in (("embeddings", "checkpoint_id, checkpoint_sha, corpus_hash, layer, pooling"),
                       ("kappa", "corpus_hash, centered, checkpoint_a, checkpoint_b"),
                       ("fingerprints", "corpus_hash, checkpoint_id"),
                       ("task_features", "checkpoint_id, checkpoint_sha, task_hash, kind, pooling"),
                       ("task_scores", "task, checkpoint_id, metric"),
                       ("nightly_stages", "run_id, stage")):
        total, distinct = query(index_dir, f"SELECT count(*), count(DISTINCT ({key})) FROM {table}")[0]
        assert total == distinct, table
    open_failures = query(index_dir, "SELECT subject, stage, kind, count(*) FROM failures "
                                     "WHERE resolved_at IS NULL GROUP BY ALL HAVING count(*) > 1")
    assert open_failures == []
    for path, sha256 in query(index_dir, "SELECT path, file_sha256 FROM embeddings UNION ALL "
                                         "SELECT path, file_sha256 FROM task_features"):
        assert file_sha256(index_dir / path) == sha256, path
    faiss_files = sorted((index_dir / "store").rglob("*.faiss"))
    assert faiss_files and not list((index_dir / "store").rglob(".*.tmp"))
    for path in faiss_files:
        assert faiss.read_index(str(path)).ntotal > 0, path
    (fingerprint_rows,) = (index_dir / "store" / "fingerprints").glob("*/rows-00000.f16")
    rows = fingerprint_rows.stat().st_size // (2 * query(index_dir, "SELECT any_value(dim) FROM fingerprints")[0][0])
    assert rows == query(index_dir, "SELECT max(fp_id) + 1 FROM fingerprints")[0][0]


def test_sigterm_stops_the_run_and_records_it_interrupted(setup: Setup, hub: GatedHub, tmp_path: Path) -> None:
    config = tmp_path / "crawl.toml"
    config.write_text(f'[[crawl]]\nsource = "hf"\nendpoint = "{hub.url}"\nretries = 0\n[score]\ntasks = []\n')
    index_dir = tmp_path / "index"
    gate = hub.gate(MODEL_INFO, BROKEN)
    process = setup.start(index_dir, "nightly", "--config", str(config))
    wait_for(gate, process)
    process.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
    out, err = process.communicate(timeout=WAIT_S)
    hub.open_gates()
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == ("hubindex: error: nightly run 1 interrupted in stage crawl; "
                                    "the next run completes its work")
    assert query(index_dir, "SELECT status, error FROM nightly_runs") == [
        ("interrupted", "nightly run 1 interrupted in stage crawl; the next run completes its work")]
    assert query(index_dir, "SELECT status FROM crawl_runs") == [("interrupted",)]


# ---------------------------------------------------------------------------------- configuration


def test_example_config_parses_and_validates(hubindex: Any) -> None:
    from hubindex.nightly import load_config

    config = load_config(EXAMPLE_CONFIG)
    assert [c.source for c in config.crawl] == ["timm", "local"]
    assert config.crawl[0].options["pattern"] == "efficientnet*"
    # Relative to the file: the zoo `hubindex zoo build` assembles in the embedded index.
    assert config.crawl[1].options["path"].resolve() == EXAMPLE_CONFIG.parent.parent.parent / "index_data" / "zoo"
    assert [c.name for c in config.probe.corpora] == ["bbc-news", "sample-images"]
    assert config.probe.max_checkpoints == 200
    assert config.score.tasks is None and config.score.metrics == ("logme", "knn")
    # tests/test_nightly_check.py runs --check on the example against an index with the zoo.


def test_crawl_options_are_those_of_the_command_line() -> None:
    import click

    from hubindex.cli import crawl_group
    from hubindex.nightly import parse_config

    config = parse_config('[[crawl]]\nsource = "hf"\nfilter = ["a", "b"]\nlimit = 5\nsort = "lastModified"\n')
    context = click.Context(crawl_group)
    command = crawl_group.get_command(context, "hf")
    expected = command.make_context("hf", ["--filter", "a", "--filter", "b", "--limit", "5", "--sort", "lastModified"])
    crawler_options = {name: value for name, value in expected.params.items() if name != "fmt"}  # not output
    assert config.crawl[0].options == crawler_options


@pytest.mark.parametrize(("text", "fragment"), [
    ('[prob]\nwhere = "true"\n', "unknown key 'prob'; expected one of: crawl, probe,"),
    ('[probe]\ncorpus = ["bbc-news"]\n', "[probe]: unknown key 'corpus'; expected one of: corpora, where,"),
    ('[probe]\nmax_checkpoints = "ten"\n', "[probe] max_checkpoints: expected an integer of at least 1, got 'ten'"),
    ('[probe]\ncorpora = ["no-such-corpus"]\n', "unknown corpus 'no-such-corpus'"),
    ('[[crawl]]\nsource = "gitlab"\n', "[[crawl]] #1 (gitlab): unknown crawl source 'gitlab'"),
    ('[[crawl]]\nsource = "hf"\nfiltr = "x"\n', "[[crawl]] #1 (hf): unknown key 'filtr'; expected one of: author,"),
    ('[[crawl]]\nsource = "hf"\nlimit = "many"\n', "Invalid value for '--limit'"),
    ('[[crawl]]\nsource = "local"\n', "[[crawl]] #1 (local): needs `path`"),
    ('[score]\nmetrics = ["no-such-metric"]\n', "[score] metrics: unknown metric 'no-such-metric'"),
    ('[executor]\nkind = "slurm"\n', "[executor] kind: unknown executor 'slurm'"),
    ('[limits]\nretry_failed_after_days = -1\n', "retry_failed_after_days: expected a finite number of at least 0"),
    ('[limits]\nretry_failed_after_days = nan\n', "retry_failed_after_days: expected a finite number of at least 0"),
    ('[limits]\nretry_failed_after_days = inf\n', "retry_failed_after_days: expected a finite number of at least 0"),
    ("[probe\n", "not valid TOML"),
    ("[kappa]\ndense_max = 1\n", "[kappa] dense_max: expected an integer of at least 2, got 1"),
    ("[kappa]\ngraph_candidates = 10\n", "[kappa] graph_candidates: 10 is fewer than graph_neighbors (32)"),
    ("[kappa]\ngraph_neighbors = 200\n", "[kappa] graph_neighbors: 200 exceeds the default graph_candidates (128)"),
    ("[probe]\ncorpora = [{ name = \"bbc-news\", max_items = 0 }]\n",
     "[probe] corpora #1 max_items: expected an integer of at least 1, got 0"),
    ('[probe]\ncorpora = [{ max_items = 5 }]\n', "[probe] corpora #1: needs `name`"),
    ("[probe]\nwhere = 5\n", "[probe] where: expected a non-empty string, got 5"),
    ('[probe]\nwhere = "true; DROP TABLE checkpoints"\n', "[probe] where: one SQL condition"),
    ("[score]\ntasks = \"news\"\n", "[score] tasks: expected a list of strings, got 'news'"),
    ("[kappa]\ncentered = 1\n", "[kappa] centered: expected true or false, got 1"),
    ("[limits]\nbusy_timeout_seconds = true\n", "busy_timeout_seconds: expected a finite number of at least 0"),
    ("probe = 3\n", "[probe]: expected a table, got 3"),
    ('[executor]\ndevice = "tpu"\n', "[executor] device: expected one of auto, cpu, cuda, got 'tpu'"),
])
def test_config_errors_name_the_key(hubindex: Any, tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert_one_line_error(hubindex("nightly", "--config", str(config)), str(config), fragment, exit_code=2)


def test_defaults_repeat_the_recorded_crawls(hubindex: Any, index_dir: Path, zoo: Zoo) -> None:
    from hubindex.nightly import default_config

    assert hubindex("crawl", "local", str(zoo.out)).exit_code == 0
    config = default_config(Index(index_dir))
    assert [(c.source, c.options) for c in config.crawl] == [("local", {"path": Path(str(zoo.out))})]
    assert config.probe.corpora == () and config.probe.where == "local_path IS NOT NULL"
    result = hubindex("nightly")
    assert result.exit_code == 0, result.stderr
    assert query(index_dir, "SELECT crawler, status FROM crawl_runs ORDER BY run_id") == [
        ("local", "completed"), ("local", "completed")]


def test_a_reader_between_stages_delays_the_run_instead_of_failing_it(
        hubindex: Any, index_dir: Path, zoo: Zoo, tmp_path: Path) -> None:
    config = tmp_path / "crawl.toml"
    config.write_text(f'[[crawl]]\nsource = "local"\npath = "{zoo.out}"\n')
    assert hubindex("nightly", "--config", str(config)).exit_code == 0
    hold_s = 3.0
    reader = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; connection = duckdb.connect(sys.argv[1], read_only=True); "
        "print('open', flush=True); time.sleep(float(sys.argv[2])); connection.close()"),
        str(index_dir / "catalog.duckdb"), str(hold_s)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        started = time.perf_counter()
        result = hubindex("nightly", "--config", str(config))
        waited = time.perf_counter() - started
    finally:
        reader.wait()
    assert result.exit_code == 0, result.stderr
    assert waited > hold_s / 2, waited  # it waited for the reader to let go, then ran
    assert query(index_dir, "SELECT status FROM nightly_runs ORDER BY run_id") == [("completed",), ("completed",)]


def test_long_stages_publish_snapshots_between_batches(
        hubindex: Any, index_dir: Path, zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    from hubindex.catalog import Catalog

    published: list[int] = []
    publish = Catalog.publish_snapshot

    def publish_and_count(catalog: Catalog) -> Path:
        snapshot = publish(catalog)
        with duckdb.connect(str(snapshot), read_only=True) as copy:
            published.append(copy.execute("SELECT count(*) FROM embeddings").fetchone()[0])
        return snapshot

    monkeypatch.setattr(Catalog, "publish_snapshot", publish_and_count)
    monkeypatch.setattr("hubindex.nightly.stages.CHUNK", 1)  # one checkpoint per batch
    members = ", ".join(f"'{ZOO}{m}'" for m in TEXT_MEMBERS)
    config = tmp_path / "nightly.toml"
    config.write_text(f'[[crawl]]\nsource = "local"\npath = "{zoo.out}"\n'
                      f'[probe]\ncorpora = [{{ name = "bbc-news", max_items = 50 }}]\n'
                      f'where = "checkpoint_id IN ({members})"\n[score]\ntasks = []\n'
                      f'[limits]\nsnapshot_every_minutes = 0\n')
    result = hubindex("nightly", "--config", str(config))
    assert result.exit_code == 0, result.stderr
    # start, after crawl, after each of the two probe batches, after probe, kappa, score, the end
    assert published == [0, 0, 1, 2, 2, 2, 2, 2]


# ---------------------------------------------------------------------------------- storage errors


def test_full_disk_stops_the_run_with_one_line_and_keeps_the_catalog(
        hubindex: Any, index_dir: Path, zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import catalog_snapshot

    crawl = tmp_path / "crawl.toml"
    crawl.write_text(f'[[crawl]]\nsource = "local"\npath = "{zoo.out}"\n[score]\ntasks = []\n')
    assert hubindex("nightly", "--config", str(crawl)).exit_code == 0
    before = catalog_snapshot(Index(index_dir))

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("hubindex.store.atomic_write_bytes", full_disk)
    probe = tmp_path / "probe.toml"
    probe.write_text(f'[probe]\ncorpora = [{{ name = "bbc-news", max_items = 50 }}]\n'
                     f'where = "checkpoint_id = \'{ZOO}{TEXT_MEMBERS[0]}\'"\n[score]\ntasks = []\n')
    result = hubindex("nightly", "--config", str(probe))
    line = error_line(result, "nightly run 2 stopped in stage probe: cannot write ",
                      "No space left on device; free space or fix permissions under", exit_code=1)
    assert str(index_dir / "store" / "embeddings") in line
    after = catalog_snapshot(Index(index_dir))
    bookkeeping = {"nightly_runs", "nightly_stages"}
    assert {k: v for k, v in after["tables"].items() if k not in bookkeeping} == {
        k: v for k, v in before["tables"].items() if k not in bookkeeping}
    assert [k for k in after["files"] if k.startswith("store/")] == []
    assert query(index_dir, "SELECT run_id, status, error FROM nightly_runs WHERE run_id = 2") == [
        (2, "failed", line.removeprefix("hubindex: error: "))]


def error_line(result: Any, *fragments: str, exit_code: int) -> str:
    """The run's one error line: the last on stderr, after its progress lines, and nothing on stdout."""
    assert result.exit_code == exit_code, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("hubindex: error: ")] == lines[-1:], result.stderr
    assert all(line.startswith("nightly: ") for line in lines[:-1]), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def test_permission_error_is_one_line(hubindex: Any, tmp_path: Path) -> None:
    # /sys refuses new files even to root: a real permission error without chmod.
    target = Path("/sys/fs/hubindex-nightly-test")
    try:
        target.mkdir()
    except PermissionError as exc:
        refusal = exc.strerror  # EACCES or EPERM, as the kernel answers
    else:  # pragma: no cover - a system where /sys is writable
        target.rmdir()
        pytest.skip("/sys accepts new folders here")
    result = run_hubindex("nightly", "--config", str(write_empty_config(tmp_path)), index_dir=target / "index")
    assert_one_line_error(result, f"cannot create the nightly lock {target / 'index' / 'nightly.lock'}: {refusal}",
                          exit_code=1)


def write_empty_config(folder: Path) -> Path:
    config = folder / "empty.toml"
    config.write_text("")
    return config


def test_lock_refuses_a_second_holder_and_is_freed_when_its_process_dies(tmp_path: Path) -> None:
    from hubindex.nightly import NightlyLock, NightlyLockedError

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from hubindex.nightly import NightlyLock; "
        "lock = NightlyLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NightlyLockedError, match=rf"another nightly run \(pid {holder.pid} on .*, started "):
            NightlyLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = NightlyLock(tmp_path)
    lock.acquire()  # the kernel let go of the dead holder's lock
    lock.release()


def test_nightly_guide_quotes_the_example_files_verbatim() -> None:
    folder = EXAMPLE_CONFIG.parent
    guide = (folder.parent.parent / "docs" / "nightly.md").read_text()
    service = (folder / "hubindex-nightly.service").read_text()
    timer = (folder / "hubindex-nightly.timer").read_text()
    assert "ExecStart=" in service and " nightly --config " in service
    assert "OnCalendar=" in timer and "Unit=hubindex-nightly.service" in timer
    for path, text, fence in ((EXAMPLE_CONFIG, EXAMPLE_CONFIG.read_text(), "```toml\n"),
                              (folder / "hubindex-nightly.service", service, "```ini\n"),
                              (folder / "hubindex-nightly.timer", timer, "```ini\n")):
        assert f"{fence}{text}```" in guide, f"docs/nightly.md does not quote {path.name} verbatim"


def test_a_checkpoint_no_probe_takes_is_recorded_once_per_revision(hubindex: Any, index_dir: Path,
                                                                  tmp_path: Path) -> None:
    from type_zoo import build_type_zoo

    zoo = tmp_path / "zoo"
    build_type_zoo(zoo, ["audio-wav2vec2", "text-bert"])
    config = tmp_path / "nightly.toml"
    config.write_text(f'[[crawl]]\nsource = "local"\npath = "{zoo}"\n\n'
                      '[probe]\ncorpora = [{ name = "bbc-news", max_items = 200 }]\nwhere = "true"\n')
    first = hubindex("nightly", "--config", str(config))
    assert first.exit_code == 0, first.stderr
    failures = query(index_dir, "SELECT subject, kind, revision IS NOT NULL FROM failures WHERE stage = 'probe'")
    assert failures == [(f"local:{zoo / 'audio-wav2vec2'}", "unsupported", True)]
    assert query(index_dir, "SELECT count(*) FROM embeddings") == [(1,)]
    # The next night does not try it again (its revision is unchanged) and records nothing new.
    second = hubindex("nightly", "--config", str(config))
    assert second.exit_code == 0, second.stderr
    assert query(index_dir, "SELECT count(*), max(nightly_run_id) FROM failures WHERE stage = 'probe'") == [(1, 1)]
