"""`hubindex nightly`: the scheduled run that keeps an index current, safe to start every night.

A run takes the index's nightly lock, marks a run that died before it `interrupted`, then runs
its stages in order - crawl (the configured sources) -> probe (checkpoints without features at
their current revision) -> kappa (missing pairs and fingerprints) -> score (registered tasks) ->
report - and records each finished stage in `nightly_stages`. Every stage is incremental, so a
run after a night without changes downloads nothing and runs no model. A stage that fails is
recorded and the later stages still run; a checkpoint that fails is recorded in `failures` and
not retried until its revision changes (or `retry_failed_after_days` pass). A full disk or a
permission error stops the run with one line saying what could not be written.

DuckDB lets one process write a catalog file and no other process read it meanwhile, so after
each stage (and every few minutes inside long ones) the run publishes a read snapshot
(catalog.snapshot.duckdb) that `hubindex sql` answers from while the catalog is locked.

The modules, each importing only those listed before it:

    errors         the run's errors and which of them stop it
    crawl_sources  [[crawl]] tables, read through each crawler's click parameters
    config         the TOML configuration and its validation (pydantic)
    defaults       the settings without a file: what the index already holds
    check          `--check`: problems that need the index or the disk
    lock           the nightly lock (filelock) and who holds it
    planning       which checkpoints a stage must probe or score
    report         stage results and the text report
    stages         the crawl, probe, kappa and score stages of one run
    run            run_nightly: lock, record, stages, report
"""

from hubindex.nightly.check import config_problems
from hubindex.nightly.config import NightlyConfig, load_config, parse_config
from hubindex.nightly.crawl_sources import CrawlSource, crawler_options
from hubindex.nightly.defaults import default_config
from hubindex.nightly.errors import (
    NightlyInterrupted,
    NightlyLockedError,
    StorageError,
    storage_problem,
)
from hubindex.nightly.lock import (
    LockHolder,
    NightlyLock,
    describe_writer,
    read_lock_holder,
)
from hubindex.nightly.report import NightlyReport, StageResult, render_summary
from hubindex.nightly.run import remove_stale_temporaries, run_nightly
from hubindex.nightly.stages import CHUNK, PatientIndex

__all__ = [
    "CHUNK", "CrawlSource", "LockHolder", "NightlyConfig", "NightlyInterrupted", "NightlyLock", "NightlyLockedError",
    "NightlyReport", "PatientIndex", "StageResult", "StorageError", "config_problems", "crawler_options",
    "default_config", "describe_writer", "load_config", "parse_config", "read_lock_holder", "remove_stale_temporaries",
    "render_summary", "run_nightly", "storage_problem",
]
