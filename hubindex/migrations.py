"""The catalog schema, as numbered migrations applied in order and recorded in `schema_migrations`.

Never edit a migration that has shipped: add a new one. Each runs in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import duckdb

import hubindex.lineage_closure as lineage_closure  # noqa: PLR0402 - `from hubindex import` counts as importing the package (tests/test_layout.py)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    # Run after `sql`, in the same transaction: derived data that SQL alone cannot build.
    after: Callable[[duckdb.DuckDBPyConnection], object] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "checkpoints, crawl runs and failures",
        """
        CREATE SEQUENCE crawl_run_ids START 1;
        CREATE SEQUENCE failure_ids START 1;

        CREATE TABLE checkpoints (
            checkpoint_id   VARCHAR PRIMARY KEY,   -- 'hf:org/name', 'timm:arch.tag', 'local:/abs/path'
            source          VARCHAR NOT NULL,      -- the crawler that first indexed it
            repo_id         VARCHAR,               -- hub repo id, timm name or folder name
            sha             VARCHAR,               -- current commit (hub) or content hash (local)
            metadata_sha    VARCHAR,               -- sha at which full metadata was last fetched
            last_modified   TIMESTAMP,
            created_at      TIMESTAMP,
            first_seen_at   TIMESTAMP NOT NULL,
            crawled_at      TIMESTAMP NOT NULL,  -- last time any crawler saw it
            author          VARCHAR,
            private         BOOLEAN,
            gated           BOOLEAN,
            gated_mode      VARCHAR,               -- 'auto' or 'manual' when gated
            disabled        BOOLEAN,
            pipeline_tag    VARCHAR,
            library_name    VARCHAR,
            model_type      VARCHAR,
            architectures   VARCHAR[],
            tags            VARCHAR[],
            license         VARCHAR,
            datasets        VARCHAR[],
            arxiv_ids       VARCHAR[],
            base_models     VARCHAR[],
            params_total    BIGINT,
            params_by_dtype MAP(VARCHAR, BIGINT),
            weight_files    STRUCT(name VARCHAR, size BIGINT, sha256 VARCHAR)[],
            eval_results    STRUCT(task VARCHAR, dataset VARCHAR, split VARCHAR,
                                   metric VARCHAR, value DOUBLE)[],
            downloads       BIGINT,                -- last 30 days, as the Hub counts them
            likes           BIGINT,
            in1k_top1       DOUBLE,                -- ImageNet-1k validation accuracy, percent
            in1k_top5       DOUBLE,
            in1k_img_size   INTEGER,               -- image size of that evaluation
            upstream_data   VARCHAR,               -- pretraining data, e.g. 'in21k', 'laion2b'
            num_classes     INTEGER,
            num_features    INTEGER,
            input_size      INTEGER[],             -- [channels, height, width] for vision models
            hf_hub_id       VARCHAR,               -- where a timm model's weights live on the Hub
            pretrained_cfg  JSON,                  -- timm pretrained_cfg / model config, verbatim
            local_path      VARCHAR,               -- where the weights already are on disk
            local_sha       VARCHAR                -- commit or content hash of that local copy
        );

        CREATE TABLE crawl_runs (
            run_id          BIGINT PRIMARY KEY DEFAULT nextval('crawl_run_ids'),
            crawler         VARCHAR NOT NULL,
            crawler_version VARCHAR NOT NULL,
            params          JSON NOT NULL,
            query_key       VARCHAR NOT NULL,
            status          VARCHAR NOT NULL,      -- running | completed | failed | interrupted
            started_at      TIMESTAMP NOT NULL,
            finished_at     TIMESTAMP,
            resumed_from    BIGINT,                -- an interrupted run this one completed
            seen            BIGINT NOT NULL DEFAULT 0,
            added           BIGINT NOT NULL DEFAULT 0,
            changed         BIGINT NOT NULL DEFAULT 0,
            unchanged       BIGINT NOT NULL DEFAULT 0,
            failed          BIGINT NOT NULL DEFAULT 0,
            fetched         BIGINT NOT NULL DEFAULT 0, -- full-metadata calls made (model_info)
            watermark       TIMESTAMP,           -- newest last_modified seen
            error           VARCHAR
        );

        CREATE TABLE failures (
            failure_id      BIGINT PRIMARY KEY DEFAULT nextval('failure_ids'),
            run_id          BIGINT,
            stage           VARCHAR NOT NULL,      -- crawl | probe | score | ...
            subject         VARCHAR NOT NULL,      -- checkpoint_id, repo id or path
            kind            VARCHAR NOT NULL,      -- gated | disabled | not-found | http-503 | ...
            message         VARCHAR NOT NULL,
            occurred_at     TIMESTAMP NOT NULL,
            resolved_at     TIMESTAMP            -- set when a later run succeeds on the subject
        );
        """,
    ),
    Migration(
        2,
        "embeddings, kappa and fingerprints",
        """
        -- One stored feature matrix per (checkpoint, its sha, corpus hash, layer, pooling): the FAISS
        -- file under store/ holds its rows, keyed by item index (dropped items are absent).
        CREATE TABLE embeddings (
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            corpus          VARCHAR NOT NULL,
            corpus_hash     VARCHAR NOT NULL,
            layer           VARCHAR NOT NULL,      -- 'last' or a layer index
            pooling         VARCHAR NOT NULL,      -- 'last-subword', 'pre-logits', ...
            probe           VARCHAR NOT NULL,
            probe_version   VARCHAR NOT NULL,
            n_items         INTEGER NOT NULL,      -- items in the corpus
            n_kept          INTEGER NOT NULL,      -- items with features (others were dropped)
            dim             INTEGER NOT NULL,
            path            VARCHAR NOT NULL,      -- relative to the index folder
            file_sha256     VARCHAR NOT NULL,
            seconds         DOUBLE,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (checkpoint_id, checkpoint_sha, corpus_hash, layer, pooling)
        );

        CREATE TABLE kappa (
            corpus          VARCHAR NOT NULL,
            corpus_hash     VARCHAR NOT NULL,
            centered        BOOLEAN NOT NULL,
            checkpoint_a    VARCHAR NOT NULL,      -- checkpoint_a < checkpoint_b; the diagonal is 1
            checkpoint_b    VARCHAR NOT NULL,
            sha_a           VARCHAR NOT NULL,
            sha_b           VARCHAR NOT NULL,
            value           DOUBLE NOT NULL,
            n_items         INTEGER NOT NULL,
            computed_at     TIMESTAMP NOT NULL,
            PRIMARY KEY (corpus_hash, centered, checkpoint_a, checkpoint_b)
        );

        -- Task fingerprints: TensorSketch rows in store/fingerprints/<corpus hash[:16]>-<dim>.faiss,
        -- whose inner products estimate kappa; fp_id is the row's id in that FAISS index.
        CREATE SEQUENCE fingerprint_ids START 1;
        CREATE TABLE fingerprints (
            corpus_hash     VARCHAR NOT NULL,
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            fp_id           BIGINT NOT NULL DEFAULT nextval('fingerprint_ids'),
            dim             INTEGER NOT NULL,
            seed            INTEGER NOT NULL,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (corpus_hash, checkpoint_id)
        );
        """,
    ),
    Migration(
        3,
        "labeled tasks, their features and per-task metric scores",
        """
        -- A labeled task added by `hubindex task add`: its examples and labels are copied into
        -- the index folder (`path`), split into train/validation by a seeded stratified draw.
        CREATE TABLE tasks (
            task            VARCHAR PRIMARY KEY,
            modality        VARCHAR NOT NULL,      -- 'text' | 'image'
            source_kind     VARCHAR NOT NULL,      -- 'images' | 'csv' | 'arrays' | 'dataset'
            source          VARCHAR NOT NULL,      -- what was read, e.g. the folder or file path
            n_examples      INTEGER NOT NULL,
            n_train         INTEGER NOT NULL,
            n_classes       INTEGER NOT NULL,
            classes         VARCHAR[] NOT NULL,    -- label i is classes[i]
            validation_fraction DOUBLE NOT NULL,
            seed            INTEGER NOT NULL,
            content_hash    VARCHAR NOT NULL,      -- sha256 of examples, labels and split
            path            VARCHAR NOT NULL,      -- relative to the index folder
            created_at      TIMESTAMP NOT NULL
        );

        -- A checkpoint's features of a task's examples (kind 'features') and its own
        -- classification head's softmax (kind 'head'), stored as FAISS files like `embeddings`.
        CREATE TABLE task_features (
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            task_hash       VARCHAR NOT NULL,
            kind            VARCHAR NOT NULL,      -- 'features' | 'head'
            pooling         VARCHAR NOT NULL,      -- how an example became one row, e.g. 'mean-tokens'
            task            VARCHAR NOT NULL,
            probe           VARCHAR NOT NULL,
            probe_version   VARCHAR NOT NULL,
            has_head        BOOLEAN NOT NULL,      -- whether the checkpoint has a classification head
            n_examples      INTEGER NOT NULL,
            dim             INTEGER NOT NULL,
            path            VARCHAR NOT NULL,
            file_sha256     VARCHAR NOT NULL,
            seconds         DOUBLE,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (checkpoint_id, checkpoint_sha, task_hash, kind, pooling)
        );

        -- One score per (task, checkpoint, metric): `hubindex score` recomputes a row only when
        -- its inputs (task data, checkpoint sha, reference task, seed) or the metric version change.
        CREATE TABLE task_scores (
            task            VARCHAR NOT NULL,
            checkpoint_id   VARCHAR NOT NULL,
            metric          VARCHAR NOT NULL,
            metric_version  VARCHAR NOT NULL,
            value           DOUBLE NOT NULL,
            higher_is_better BOOLEAN NOT NULL,
            seconds         DOUBLE NOT NULL,       -- the metric's own time, features already embedded
            computed_at     TIMESTAMP NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            task_hash       VARCHAR NOT NULL,
            reference_task  VARCHAR,               -- for metrics that need one (task-relatedness)
            inputs_hash     VARCHAR NOT NULL,
            PRIMARY KEY (task, checkpoint_id, metric)
        );
        """,
    ),
    Migration(
        4,
        "selections made by search strategies",
        """
        -- One row per `hubindex select` / `hubindex search` answer; its picks in selection_items.
        CREATE SEQUENCE selection_ids START 1;
        CREATE TABLE selections (
            selection_id    BIGINT PRIMARY KEY DEFAULT nextval('selection_ids'),
            strategy        VARCHAR NOT NULL,      -- the query plugin: mmi, agnostic, aware, hybrid, random
            strategy_version VARCHAR NOT NULL,
            budget          INTEGER NOT NULL,
            task            VARCHAR,               -- for task-aware strategies
            metric          VARCHAR,
            corpus          VARCHAR,               -- for kappa-based strategies (MMI)
            pool_condition  VARCHAR,               -- the --where condition, NULL for all checkpoints
            pool_size       INTEGER NOT NULL,
            seed            INTEGER,
            created_at      TIMESTAMP NOT NULL
        );
        CREATE TABLE selection_items (
            selection_id    BIGINT NOT NULL,
            rank            INTEGER NOT NULL,      -- 1 = picked first
            checkpoint_id   VARCHAR NOT NULL,
            value           DOUBLE,                -- what the strategy ranked by (score, top-1, gain)
            mi_nats         DOUBLE,                -- MMI: cumulative mutual information after this pick
            reason          VARCHAR NOT NULL,
            PRIMARY KEY (selection_id, rank)
        );
        """,
    ),
    Migration(
        5,
        "nightly runs, their stages, and failures linked to them",
        """
        -- One row per `hubindex nightly` run. A run still 'running' when the next one starts died
        -- without finishing (killed, power cut); the next run marks it 'interrupted'.
        CREATE SEQUENCE nightly_run_ids START 1;
        CREATE TABLE nightly_runs (
            run_id          BIGINT PRIMARY KEY DEFAULT nextval('nightly_run_ids'),
            started_at      TIMESTAMP NOT NULL,
            finished_at     TIMESTAMP,
            status          VARCHAR NOT NULL,      -- running | completed | failed | interrupted
            host            VARCHAR NOT NULL,
            pid             INTEGER NOT NULL,
            config_source   VARCHAR NOT NULL,      -- the --config file, or 'defaults'
            config          JSON NOT NULL,         -- the effective settings, CLI overrides applied
            config_sha256   VARCHAR NOT NULL,
            summary         VARCHAR,               -- the text report, also in reports/nightly-<run_id>.txt
            error           VARCHAR                -- why the run stopped, for failed runs
        );

        -- One row per finished stage of a run (crawl, probe, kappa, score); a stage that was
        -- killed has none. The counters mean, per stage: crawl - checkpoints; probe - checkpoints
        -- given features; kappa - pairs and fingerprints; score - scores.
        CREATE TABLE nightly_stages (
            run_id          BIGINT NOT NULL,
            stage           VARCHAR NOT NULL,
            status          VARCHAR NOT NULL,      -- completed | failed | skipped
            started_at      TIMESTAMP NOT NULL,
            seconds         DOUBLE NOT NULL,
            added           BIGINT NOT NULL,
            changed         BIGINT NOT NULL,
            unchanged       BIGINT NOT NULL,
            failed          BIGINT NOT NULL,
            details         JSON NOT NULL,         -- per source, corpus or task: what was done
            PRIMARY KEY (run_id, stage)
        );

        -- Failures of a nightly run's stages name the run; `revision` is the checkpoint revision
        -- (sha) that failed, so a nightly run retries the checkpoint only once it changes (or
        -- after the configured number of days).
        ALTER TABLE failures ADD COLUMN nightly_run_id BIGINT;
        ALTER TABLE failures ADD COLUMN revision VARCHAR;
        """,
    ),
    Migration(
        6,
        "the precision features were computed in is part of their key",
        """
        -- On CUDA a checkpoint stored in half precision is probed in that precision: `dtype`
        -- ('float32', 'bfloat16', 'float16') joins the key of stored features. Rows from before
        -- were all computed in float32.
        CREATE TABLE embeddings_v6 (
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            corpus          VARCHAR NOT NULL,
            corpus_hash     VARCHAR NOT NULL,
            layer           VARCHAR NOT NULL,
            pooling         VARCHAR NOT NULL,
            dtype           VARCHAR NOT NULL DEFAULT 'float32', -- precision the model ran in
            probe           VARCHAR NOT NULL,
            probe_version   VARCHAR NOT NULL,
            n_items         INTEGER NOT NULL,
            n_kept          INTEGER NOT NULL,
            dim             INTEGER NOT NULL,
            path            VARCHAR NOT NULL,
            file_sha256     VARCHAR NOT NULL,
            seconds         DOUBLE,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (checkpoint_id, checkpoint_sha, corpus_hash, layer, pooling, dtype)
        );
        INSERT INTO embeddings_v6
            SELECT checkpoint_id, checkpoint_sha, corpus, corpus_hash, layer, pooling, 'float32', probe,
                   probe_version, n_items, n_kept, dim, path, file_sha256, seconds, created_at
            FROM embeddings;
        DROP TABLE embeddings;
        ALTER TABLE embeddings_v6 RENAME TO embeddings;

        CREATE TABLE task_features_v6 (
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            task_hash       VARCHAR NOT NULL,
            kind            VARCHAR NOT NULL,
            pooling         VARCHAR NOT NULL,
            dtype           VARCHAR NOT NULL DEFAULT 'float32', -- precision the model ran in
            task            VARCHAR NOT NULL,
            probe           VARCHAR NOT NULL,
            probe_version   VARCHAR NOT NULL,
            has_head        BOOLEAN NOT NULL,
            n_examples      INTEGER NOT NULL,
            dim             INTEGER NOT NULL,
            path            VARCHAR NOT NULL,
            file_sha256     VARCHAR NOT NULL,
            seconds         DOUBLE,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (checkpoint_id, checkpoint_sha, task_hash, kind, pooling, dtype)
        );
        INSERT INTO task_features_v6
            SELECT checkpoint_id, checkpoint_sha, task_hash, kind, pooling, 'float32', task, probe, probe_version,
                   has_head, n_examples, dim, path, file_sha256, seconds, created_at
            FROM task_features;
        DROP TABLE task_features;
        ALTER TABLE task_features_v6 RENAME TO task_features;
        """,
    ),
    Migration(
        7,
        "sparse kappa graph: which checkpoints have their nearest pairs",
        """
        -- Above `hubindex kappa --dense-max` checkpoints, kappa is a sparse graph: each checkpoint's
        -- exact kappa to its `neighbors` highest of `candidates` found by fingerprint search, stored
        -- in `kappa` like dense pairs. A row here says that search was done for the checkpoint at
        -- that sha (its pairs may be fewer than `neighbors` rows of its own: pairs are stored once).
        CREATE TABLE kappa_graph (
            corpus_hash     VARCHAR NOT NULL,
            centered        BOOLEAN NOT NULL,
            checkpoint_id   VARCHAR NOT NULL,
            checkpoint_sha  VARCHAR NOT NULL,
            neighbors       INTEGER NOT NULL,
            candidates      INTEGER NOT NULL,
            computed_at     TIMESTAMP NOT NULL,
            PRIMARY KEY (corpus_hash, centered, checkpoint_id)
        );
        """,
    ),
    Migration(
        8,
        "selections name the corpus content their kappa came from",
        """
        -- A corpus name can have several probed contents (sizes): a selection made on kappa keeps
        -- the content hash it used. Earlier rows get the hash where their corpus name has only one
        -- probed content; where it has several, which one was used is unknown and stays NULL.
        ALTER TABLE selections ADD COLUMN IF NOT EXISTS corpus_hash VARCHAR;
        UPDATE selections SET corpus_hash = (
            SELECT min(e.corpus_hash) FROM embeddings e WHERE e.corpus = selections.corpus
            HAVING count(DISTINCT e.corpus_hash) = 1
        ) WHERE corpus IS NOT NULL AND corpus_hash IS NULL;
        """,
    ),
    Migration(
        9,
        "tasks say what their labels are: classification, multi-label or regression",
        """
        -- classification: one class per example (labels.npy (n,)); multi-label: any number of the
        -- n_classes classes (labels.npy (n, C) 0/1); regression: numbers to predict (labels.npy
        -- (n, t) float; n_classes 0, `classes` names the t values). Earlier tasks are classification.
        ALTER TABLE tasks ADD COLUMN IF NOT EXISTS target VARCHAR DEFAULT 'classification';
        UPDATE tasks SET target = 'classification' WHERE target IS NULL;
        """,
    ),
    Migration(
        10,
        "checkpoint lineage: typed parent edges and their closure",
        """
        -- One row per (child, parent, evidence): a parent of a checkpoint as one kind of evidence
        -- states it (card, adapter-config, config, timm-tag, manifest: declared) or recovers it
        -- (weights, kappa). `parent` is a checkpoint id when the name resolves to one (it need not be
        -- crawled yet), else the name as written with parent_resolved false.
        CREATE TABLE lineage (
            child           VARCHAR NOT NULL,
            parent          VARCHAR NOT NULL,
            parent_resolved BOOLEAN NOT NULL,
            relation        VARCHAR NOT NULL,      -- finetune | adapter | quantized | merge | distillation | unknown
            evidence        VARCHAR NOT NULL,
            confidence      DOUBLE NOT NULL,
            declared        BOOLEAN NOT NULL,
            detail          VARCHAR,
            seen_at         TIMESTAMP NOT NULL,
            PRIMARY KEY (child, parent, evidence)
        );
        CREATE INDEX lineage_child ON lineage (child);
        CREATE INDEX lineage_parent ON lineage (parent);

        -- Derived from `lineage` (hubindex/lineage_closure.py): the edges the closure is built from,
        -- and the closure itself (shortest depth). Single-column indexes: DuckDB scans an index only
        -- for a filter on its one column, so 'descendants of X' and 'ancestors of Y' are lookups.
        CREATE TABLE lineage_effective (
            child           VARCHAR NOT NULL,
            parent          VARCHAR NOT NULL,
            in_closure      BOOLEAN,               -- false: on a cycle, left out of the closure
            PRIMARY KEY (child, parent)
        );
        CREATE TABLE lineage_closure (
            ancestor        VARCHAR NOT NULL,
            descendant      VARCHAR NOT NULL,
            depth           INTEGER NOT NULL,      -- edges on the shortest path
            ancestor_is_root BOOLEAN NOT NULL,     -- the ancestor has no ancestor: 'the root of Y' is a lookup
            PRIMARY KEY (ancestor, descendant)
        );
        CREATE INDEX lineage_closure_ancestor ON lineage_closure (ancestor);
        CREATE INDEX lineage_closure_descendant ON lineage_closure (descendant);

        -- Backfill: the base models cards named, as stored so far. They are Hub repo ids (both the Hub
        -- and the local crawler read them from cards); the relation is the one the Hub's own
        -- `base_model:<relation>:<id>` tag gives, else inferred as the Hub crawler does from what the
        -- row keeps: several -> merge, a quantization tag -> quantized, peft -> adapter, else finetune.
        INSERT INTO lineage
        SELECT DISTINCT ON (child, name)
            child,
            CASE WHEN resolved THEN 'hf:' || name ELSE name END,
            resolved,
            coalesce(tagged, CASE
                WHEN n_bases > 1 THEN 'merge'
                WHEN list_has_any(tags, ['gguf', 'awq', 'gptq', 'bitsandbytes', '4-bit', '8-bit', 'exl2', 'hqq'])
                    THEN 'quantized'
                WHEN library_name = 'peft' OR list_contains(tags, 'peft') THEN 'adapter'
                ELSE 'finetune' END),
            'card', 1.0, true, 'card base_model (kept in checkpoints.base_models before lineage)', crawled_at
        FROM (
            SELECT *, regexp_full_match(name, '(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}')
                      AND NOT contains(name, '..') AS resolved,
                   (SELECT any_value(r) FROM unnest(['adapter', 'merge', 'quantized', 'finetune']) AS t(r)
                    WHERE list_contains(tags, 'base_model:' || r || ':' || name)) AS tagged
            FROM (SELECT checkpoint_id AS child, unnest(base_models) AS name, len(base_models) AS n_bases,
                         coalesce(tags, []) AS tags, library_name, crawled_at
                  FROM checkpoints WHERE len(base_models) > 0)
            WHERE name IS NOT NULL AND name <> ''
        );
        """,
        after=lineage_closure.rebuild,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
