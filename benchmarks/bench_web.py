"""Web explorer latency: `hubindex serve` under N concurrent clients on a Hub-shaped catalog.

    .venv/bin/python benchmarks/bench_web.py [--rows 100000] [--clients 1 4 16] [--seconds 10] [--quick]

1. Builds (once; cached under benchmarks/work/web-<rows>/, git-ignored) a real catalog of --rows
   checkpoints, written through hubindex's own paths so the schema, the lineage tables and their
   closure are the real ones:
   - the Hub checkpoints go through the crawl pipeline (hubindex.pipeline.run_crawl) from a
     synthetic crawler named `hf` with the Hub crawler's owned columns, its lineage edges made by the
     Hub crawler's own edge builder (hubindex_plugins.lineage_declared.hub_edge_set) from a card's
     base_model, Hub base_model tags, adapter configs and config `_name_or_path`; the families are
     the forest of benchmarks/bench_lineage_hub.py (55 % without parent, 300 families of power-law
     sizes, the largest a fifth of the rest), renamed like Hub repos;
   - about 1,800 timm checkpoints (1.8 % of the rows; the real names of index_data/timm, padded with
     tag variants) through the timm crawler's own `record` (ImageNet results, upstream data,
     timm-tag lineage);
   - skewed columns as on the Hub: library_name, pipeline_tag and license with long tails (a
     family's members mostly inherit its root's), downloads heavy-tailed (45 % zero), likes
     following them, params for about half, last_modified leaning recent, tags;
   - for PROBED (2,000) checkpoints (600 timm ones on sample-images, the 1,400 most downloaded Hub
     ones on bbc-news): embeddings rows (a fifth also on an older corpus version), exact kappa to
     KAPPA_NEIGHBORS (20) neighbours each, mostly of their own family (hubindex.relate's pair writer),
     kappa_graph marks, task scores (4 tasks x 3 metrics for most) and some open probe failures;
     crawl failures for repos that could not be read; then a published read snapshot.
2. Starts `hubindex serve --port 0` in a subprocess, warms every page type up, and for each page
   type and each N of --clients runs a closed loop of N client threads (http.client, one persistent
   connection each) for --seconds: every request's latency (request sent to body read) and status;
   anything but 200 is an error. Page types: `list` (/checkpoints, the default order), `list-filter`
   (a facet, a search and a sort), `list-deep` (pages from the second half of the default list),
   `checkpoint` (uniformly random checkpoints) and `checkpoint-rich` (probed checkpoints with
   lineage, kappa neighbours and task scores, and the largest families' roots).
3. Writer wait: with max(--clients) clients on all page types at once, this process opens the
   catalog for writing as the nightly run does (hubindex.nightly.stages.PatientIndex(root,
   busy_timeout_s=60).open_catalog()), times how long that takes, closes it, waits a second and
   tries again, for --writer-seconds; the requests of that phase are reported too (while the writer
   holds the file the server reads the snapshot).
4. Where the time goes: with the server stopped, --profile-requests requests of each --profile page
   type one at a time in this process, through the server's page functions, timing the shared
   instance's opening, the cursor's preparation, every SQL statement and the rendering.

The run is bounded: the bound (settings x seconds + warm-up + writer phase + profiles + slack) is
printed first and nothing starts after it. Results: a markdown table on stdout, and results.json and
table.md in benchmarks/results/web/ (--quick: 10,000 rows, 3 s per setting, written to
benchmarks/results/quick/web/). The load average and CPU count are recorded: the clients and the
server share the machine's cores.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_lineage_hub import forest  # noqa: E402 - the Hub-shaped lineage forest

BUILD_VERSION = 2  # bump when the catalog the builder makes changes: cached catalogs are rebuilt
PROBED = 2000
KAPPA_NEIGHBORS = 20
TIMM_SHARE = 0.018  # about 1,800 of 10^5
NOW = datetime(2025, 6, 1)
EPOCH = datetime(2020, 1, 1)
PAGE_TYPES = ("list", "list-filter", "list-deep", "checkpoint", "checkpoint-rich")
WARMUP_REQUESTS = 8  # per page type, one client, before any timing
SLACK_S = 60.0

# (value, weight): long-tailed, roughly as the Hub's facet counts fall off.
PIPELINES = [
    (None, 38), ("text-generation", 12), ("text-classification", 8), ("reinforcement-learning", 5),
    ("text-to-image", 4), ("automatic-speech-recognition", 3.5), ("token-classification", 2.5),
    ("image-classification", 2.5), ("fill-mask", 2), ("text2text-generation", 2), ("feature-extraction", 2),
    ("question-answering", 1.5), ("sentence-similarity", 1.5), ("translation", 1.2), ("summarization", 0.8),
    ("image-text-to-text", 0.8), ("text-to-speech", 0.6), ("object-detection", 0.6), ("audio-classification", 0.6),
    ("image-segmentation", 0.4), ("zero-shot-classification", 0.3), ("image-to-text", 0.3),
    ("unconditional-image-generation", 0.3), ("depth-estimation", 0.1), ("video-classification", 0.1),
    ("tabular-classification", 0.1), ("zero-shot-image-classification", 0.1), ("image-to-image", 0.1),
]
LIBRARIES = [
    (None, 30), ("transformers", 38), ("peft", 6), ("diffusers", 4), ("stable-baselines3", 4),
    ("sentence-transformers", 2), ("ml-agents", 2), ("keras", 1.5), ("gguf", 1.5), ("pytorch", 1),
    ("mlx", 1), ("tf-keras", 0.5), ("onnx", 0.5), ("adapter-transformers", 0.4), ("setfit", 0.4),
    ("fastai", 0.4), ("sample-factory", 0.4), ("spacy", 0.3), ("timm", 0.3), ("nemo", 0.2), ("espnet", 0.2),
    ("open_clip", 0.1), ("pyannote-audio", 0.1), ("flair", 0.1), ("fasttext", 0.1), ("llamafile", 0.05),
]
LICENSES = [
    (None, 42), ("apache-2.0", 22), ("mit", 11), ("other", 5), ("cc-by-4.0", 2), ("cc-by-nc-4.0", 2),
    ("openrail", 2), ("creativeml-openrail-m", 2), ("llama3", 1.5), ("llama2", 1.5), ("llama3.1", 1),
    ("gemma", 1), ("cc-by-sa-4.0", 0.8), ("cc-by-nc-sa-4.0", 0.6), ("gpl-3.0", 0.5), ("afl-3.0", 0.5),
    ("qwen", 0.5), ("openrail++", 0.4), ("bsd-3-clause", 0.3), ("bigscience-openrail-m", 0.3), ("unknown", 0.3),
    ("agpl-3.0", 0.2), ("cc0-1.0", 0.2), ("lgpl-3.0", 0.1), ("wtfpl", 0.1), ("artistic-2.0", 0.1),
]
# The largest families' roots: (repo id, pipeline_tag, library_name, params, license).
FAMILY_ROOTS = [
    ("meta-llama/Llama-3.1-8B", "text-generation", "transformers", 8_030_000_000, "llama3.1"),
    ("Qwen/Qwen2.5-7B", "text-generation", "transformers", 7_620_000_000, "apache-2.0"),
    ("mistralai/Mistral-7B-v0.1", "text-generation", "transformers", 7_240_000_000, "apache-2.0"),
    ("google-bert/bert-base-uncased", "fill-mask", "transformers", 110_000_000, "apache-2.0"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "text-to-image", "diffusers", 3_500_000_000, "openrail++"),
    ("openai/whisper-small", "automatic-speech-recognition", "transformers", 242_000_000, "apache-2.0"),
    ("FacebookAI/roberta-base", "fill-mask", "transformers", 125_000_000, "mit"),
    ("google/gemma-2-9b", "text-generation", "transformers", 9_240_000_000, "gemma"),
    ("microsoft/phi-2", "text-generation", "transformers", 2_780_000_000, "mit"),
    ("distilbert/distilbert-base-uncased", "fill-mask", "transformers", 66_900_000, "apache-2.0"),
    ("openai-community/gpt2", "text-generation", "transformers", 124_000_000, "mit"),
    ("google/vit-base-patch16-224", "image-classification", "transformers", 86_600_000, "apache-2.0"),
    ("facebook/wav2vec2-base", "automatic-speech-recognition", "transformers", 95_000_000, "apache-2.0"),
    ("sentence-transformers/all-MiniLM-L6-v2", "sentence-similarity", "sentence-transformers", 22_700_000,
     "apache-2.0"),
    ("black-forest-labs/FLUX.1-dev", "text-to-image", "diffusers", 11_900_000_000, "other"),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "text-generation", "transformers", 1_100_000_000, "apache-2.0"),
    ("google-t5/t5-small", "text2text-generation", "transformers", 60_500_000, "apache-2.0"),
    ("microsoft/deberta-v3-base", "fill-mask", "transformers", 184_000_000, "mit"),
    ("facebook/bart-large", "feature-extraction", "transformers", 406_000_000, "apache-2.0"),
    ("EleutherAI/pythia-160m", "text-generation", "transformers", 162_000_000, "apache-2.0"),
    ("meta-llama/Llama-2-7b-hf", "text-generation", "transformers", 6_740_000_000, "llama2"),
    ("runwayml/stable-diffusion-v1-5", "text-to-image", "diffusers", 1_070_000_000, "creativeml-openrail-m"),
    ("FacebookAI/xlm-roberta-base", "fill-mask", "transformers", 278_000_000, "mit"),
    ("microsoft/resnet-50", "image-classification", "transformers", 25_600_000, "apache-2.0"),
    ("google/flan-t5-base", "text2text-generation", "transformers", 248_000_000, "apache-2.0"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "text-generation", "transformers", 7_620_000_000, "mit"),
]
SUFFIXES = {
    "finetune": ("finetuned", "sft", "instruct", "dpo", "chat", "ft", "orpo"),
    "quantized": ("GGUF", "AWQ", "GPTQ", "4bit", "Q4_K_M-GGUF", "i1-GGUF", "8bit"),
    "adapter": ("lora", "qlora", "adapter", "peft"),
    "merge": ("merge", "slerp", "ties", "dare"),
    "distillation": ("distilled",),
}
DOMAINS = ("medical", "legal", "code", "math", "ko", "ja", "de", "es", "imdb", "squad", "ner", "sentiment",
           "emotion", "finance", "roleplay", "summarize", "alpaca", "ultrachat")
QUANTIZERS = ("mradermacher", "bartowski", "TheBloke", "QuantFactory", "unsloth", "RichardErkhov")
SOLO_WORDS = ("ppo", "LunarLander-v2", "sd-class-butterflies", "wav2vec2", "bert", "vit", "sentiment", "ner",
              "distilbert", "t5", "whisper", "llama", "qwen", "mistral", "gpt2", "roberta", "xlm", "deberta",
              "dqn-SpaceInvadersNoFrameskip-v4", "q-FrozenLake-v1-4x4", "Reinforce-CartPole", "my-awesome-model",
              "test", "model", "finetuned", "emotion", "imdb", "squad", "cola", "mrpc", "sst2", "codeparrot",
              "speecht5", "segformer", "detr", "yolos", "clip", "blip", "pegasus", "bart", "opus-mt")
DATASETS = ("imdb", "squad", "glue", "common_voice", "wikitext", "c4", "openwebtext", "alpaca", "ultrachat_200k",
            "conll2003", "emotion", "cifar10", "mnist", "librispeech_asr", "xsum", "cnn_dailymail")
TASKS = (("bbc-topics", "text"), ("sst2-small", "text"), ("digits", "image"), ("cifar10-small", "image"))
METRICS = (("logme", True), ("leep", True), ("knn", True))
CORPORA = {"text": "bbc-news", "image": "sample-images"}


def pick(rng: random.Random, table: list[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


def hexdigest(*parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# ------------------------------------------------------------------------------------ the catalog


@dataclass
class Plan:
    """What the builder writes: the Hub checkpoints with their edges, the timm names, the probed subset."""

    hf: list[tuple[str, dict[str, Any], Any]] = field(default_factory=list)  # (id, columns, EdgeSet)
    timm: list[str] = field(default_factory=list)
    family_of: dict[str, int] = field(default_factory=dict)  # hf id -> family number (parentless: absent)
    downloads: dict[str, int] = field(default_factory=dict)
    failed_repos: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, kind, message)


def hub_forest(n_hf: int, seed: int) -> tuple[list[str], dict[str, list[tuple[str, str]]], dict[str, str]]:
    """bench_lineage_hub's forest, its ids renamed like Hub repos: (ids, parents, family of each id)."""
    ids, parents = forest(n_hf, seed)
    rng = random.Random(seed + 1)
    authors = max(50, n_hf // 6)
    rename: dict[str, str] = {}
    family_name: dict[str, str] = {}
    for old in ids:
        space, _, local = old[3:].partition("/")
        if space == "solo":
            author = f"user{int(authors * rng.random() ** 2)}"
            rename[old] = f"hf:{author}/{rng.choice(SOLO_WORDS)}-{rng.choice(SOLO_WORDS)}-{local[1:]}"
            continue
        family = int(space[len("family"):])
        root = FAMILY_ROOTS[family][0] if family < len(FAMILY_ROOTS) else f"org{family}/base-model-{family}"
        family_name[old] = space
        if local == "base":
            rename[old] = f"hf:{root}"
            continue
        relation = parents[old][0][1]
        author = (rng.choice(QUANTIZERS) if relation == "quantized" and rng.random() < 0.3
                  else f"user{int(authors * rng.random() ** 2)}")
        domain = f"-{rng.choice(DOMAINS)}" if rng.random() < 0.5 else ""
        rename[old] = f"hf:{author}/{root.split('/')[1]}{domain}-{rng.choice(SUFFIXES[relation])}-{local[1:]}"
    new_ids = [rename[i] for i in ids]
    assert len(set(new_ids)) == len(new_ids), "renamed ids collide"
    new_parents = {rename[c]: [(rename[p], r) for p, r in ps] for c, ps in parents.items()}
    families = {rename[old]: space for old, space in family_name.items()}
    return new_ids, new_parents, families


def plan_catalog(rows: int, seed: int = 0) -> Plan:
    from hubindex_plugins.lineage_declared import hub_edge_set

    rng = random.Random(seed)
    plan = Plan()
    n_timm = max(20, round(rows * TIMM_SHARE))
    plan.timm = timm_names(n_timm, rng)
    ids, parents, families = hub_forest(rows - len(plan.timm), seed)
    root_of_family: dict[str, str] = {}
    for cid in ids:
        if cid in families and cid not in parents:
            root_of_family[families[cid]] = cid
    family_traits: dict[str, tuple[Any, Any, int, Any]] = {}
    for space, root in root_of_family.items():
        number = int(space[len("family"):])
        if number < len(FAMILY_ROOTS):
            _, pipeline, library, params, license_ = FAMILY_ROOTS[number]
        else:
            pipeline, library = pick(rng, PIPELINES[1:]), pick(rng, LIBRARIES[1:])
            params, license_ = int(min(7e11, max(1e4, rng.lognormvariate(19.5, 1.8)))), pick(rng, LICENSES)
        family_traits[space] = (pipeline, library, params, license_)
    span = (NOW - EPOCH).total_seconds()
    for cid in ids:
        repo = cid[3:]
        stated = parents.get(cid, [])
        relation = stated[0][1] if stated else None
        space = families.get(cid)
        if space is not None:
            pipeline, library, params, license_ = family_traits[space]
            is_root = cid == root_of_family[space]
            if not is_root:
                pipeline = pipeline if rng.random() < 0.9 else None
                library = {"adapter": "peft",
                           "quantized": rng.choice((None, "transformers", "gguf"))}.get(relation, library)
                library = library if rng.random() < 0.85 else None
                license_ = license_ if rng.random() < 0.7 else pick(rng, LICENSES)
                if relation == "adapter":
                    params = int(rng.lognormvariate(16.5, 1.0))
            has_params = is_root or rng.random() < 0.6
            plan.family_of[cid] = int(space[len("family"):])
        else:
            is_root = False
            pipeline, library, license_ = pick(rng, PIPELINES), pick(rng, LIBRARIES), pick(rng, LICENSES)
            if pipeline == "reinforcement-learning":
                library = rng.choice(("stable-baselines3", "ml-agents", "sample-factory", None))
            params = int(min(7e11, max(1e4, rng.lognormvariate(18.5, 2.0))))
            has_params = rng.random() < 0.5
        if is_root:
            downloads = int(rng.uniform(2e5, 2e7) / (1 + int(families[cid][len("family"):]) / 10))
        elif rng.random() < 0.45:
            downloads = 0
        else:
            downloads = int(min(5e7, rng.paretovariate(0.75) * 3))
        likes = 0 if downloads == 0 and rng.random() < 0.9 else int((downloads ** 0.5) * rng.lognormvariate(-2, 1.2))
        modified = EPOCH + timedelta(seconds=span * rng.betavariate(3, 1))
        created = modified - timedelta(days=rng.expovariate(1 / 60))
        names = [p[3:] for p, _ in stated]
        tags = [t for t in (library, pipeline) if t] + ([f"license:{license_}"] if license_ else [])
        tags += [t for t, share in (("region:us", 0.9), ("autotrain_compatible", 0.3), ("endpoints_compatible", 0.4),
                                    ("text-generation-inference", 0.1 if pipeline == "text-generation" else 0))
                 if rng.random() < share]
        if has_params:
            tags.append("safetensors")
        datasets = [rng.choice(DATASETS)] if rng.random() < 0.1 else None
        tags += [f"dataset:{d}" for d in datasets or []]
        if rng.random() < 0.05:
            tags.append(f"arxiv:{rng.randint(1700, 2412)}.{rng.randint(1, 19999):05d}")
        files = ["config.json", "model.safetensors" if has_params else "pytorch_model.bin", "README.md"]
        adapter_config = None
        for name in names:
            tags.append(f"base_model:{name}")
            if relation in ("finetune", "quantized", "adapter", "merge"):
                tags.append(f"base_model:{relation}:{name}")
        if relation == "quantized":
            tags.append("gguf" if library == "gguf" or rng.random() < 0.5 else rng.choice(("awq", "gptq", "4-bit")))
        if relation == "adapter":
            files.append("adapter_config.json")
            adapter_config = {"base_model_name_or_path": names[0], "peft_type": "LORA"}
        config = {"_name_or_path": names[0]} if names and rng.random() < 0.02 else {}
        if not names and rng.random() < 0.01:  # an adapter trained on a local copy: an unresolved parent
            files.append("adapter_config.json")
            adapter_config = {"base_model_name_or_path": f"/home/user/models/{repo.split('/')[1]}"}
        edges = hub_edge_set({"base_model": names} if names else {}, tags, config, files, repo,
                             adapter_config=adapter_config, adapter_read=adapter_config is not None)
        sha = hexdigest("sha", cid)
        columns = {
            "repo_id": repo, "sha": sha, "metadata_sha": sha, "last_modified": modified, "created_at": created,
            "author": repo.split("/")[0], "private": False, "gated": False if rng.random() < 0.97 else True,
            "gated_mode": None, "disabled": False, "pipeline_tag": pipeline, "library_name": library,
            "model_type": None, "architectures": None, "tags": tags, "license": license_, "datasets": datasets,
            "arxiv_ids": None, "base_models": names or None,
            "params_total": params if has_params else None,
            "params_by_dtype": {rng.choice(("BF16", "F32", "F16")): params} if has_params else None,
            "weight_files": ([{"name": "model.safetensors", "size": params * 2, "sha256": hexdigest("w", cid)[:64]}]
                             if has_params else None),
            "eval_results": None, "downloads": downloads, "likes": likes,
        }
        if columns["gated"]:
            columns["gated_mode"] = rng.choice(("auto", "manual"))
        plan.hf.append((cid, columns, edges))
        plan.downloads[cid] = downloads
    # Repos the crawl could not read (gated without access, gone, 5xx): failures, no row.
    for k in range(max(5, rows // 200)):
        kind = rng.choice(("gated", "not-found", "http-503", "bad-metadata"))
        plan.failed_repos.append((f"hf:user{k}/unreadable-{k}", kind, f"synthetic {kind} failure"))
    rng.shuffle(plan.hf)  # the Hub lists by downloads, not by family: children often come before parents
    return plan


def timm_names(count: int, rng: random.Random) -> list[str]:
    """The real timm names of index_data/timm's results table, padded with tag variants to `count`."""
    from hubindex.index import SHIPPED_TIMM_RESULTS
    from hubindex_plugins.crawl_timm import load_results

    real = sorted(load_results(SHIPPED_TIMM_RESULTS))
    names = list(real[:count])
    taken = set(names)
    extra_tags = ("in22k", "in12k", "in22k_ft_in1k_384", "in12k_ft_in1k_384", "a1_in1k", "a2_in1k", "tv_in1k",
                  "fb_in22k", "fb_in22k_ft_in1k", "augreg_in21k")
    architectures = sorted({n.partition(".")[0] for n in real})
    while len(names) < count:
        name = f"{rng.choice(architectures)}.{rng.choice(extra_tags)}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def build_catalog(root: Path, rows: int) -> dict[str, Any]:
    """Fill root/catalog.duckdb (see the module docstring); returns what was built."""
    import pyarrow as pa

    from hubindex.catalog import utcnow
    from hubindex.index import SHIPPED_TIMM_RESULTS, Index
    from hubindex.lineage import closure_drift
    from hubindex.pipeline import run_crawl
    from hubindex.plugins import load_default_plugins
    from hubindex.relate import _write_pairs
    from hubindex.types import CheckpointRecord, Crawler, CrawlFailure
    from hubindex_plugins.crawl_hf import HfCrawler
    from hubindex_plugins.crawl_timm import TimmCrawler, load_results, load_upstream

    load_default_plugins()
    started = time.perf_counter()
    times: dict[str, float] = {}
    plan = plan_catalog(rows)
    times["plan_s"] = time.perf_counter() - started
    index = Index(root)
    rng = random.Random(7)

    class SyntheticHub(Crawler):
        """The Hub crawler's name, version and owned columns; its records come from the plan."""

        name = "hf"
        version = HfCrawler.version
        owned_columns = HfCrawler.owned_columns

        def crawl(self, ctx: Any) -> Iterator[Any]:
            ctx.progress.total = len(plan.hf)
            for cid, columns, edges in plan.hf:
                yield CheckpointRecord(cid, columns, fetched=True, edges=edges)
            for subject, kind, message in plan.failed_repos:
                yield CrawlFailure(subject, kind, message)

    class SyntheticTimm(TimmCrawler):
        """The timm crawler's own records, for the names of the plan (no timm import)."""

        def crawl(self, ctx: Any) -> Iterator[Any]:
            results = load_results(SHIPPED_TIMM_RESULTS)
            upstream = load_upstream(SHIPPED_TIMM_RESULTS)
            registry = frozenset(plan.timm)
            for name in plan.timm:
                architecture, _, tag = name.partition(".")
                in22k = "in22k" in tag and "_ft_" not in tag
                cfg = {"architecture": architecture, "tag": tag, "num_classes": 21843 if in22k else 1000,
                       "input_size": (3, 384, 384) if tag.endswith("384") else (3, 224, 224),
                       "license": rng.choice(("apache-2.0", "apache-2.0", "mit", "cc-by-nc-4.0")),
                       "hf_hub_id": f"timm/{name}"}
                yield self.record(name, cfg, results, upstream, registry=registry)

    start = time.perf_counter()
    run_crawl(index, SyntheticTimm(), show_progress=False)
    times["crawl_timm_s"] = time.perf_counter() - start
    start = time.perf_counter()
    run_crawl(index, SyntheticHub(), show_progress=False)
    times["crawl_hf_s"] = time.perf_counter() - start

    start = time.perf_counter()
    with index.open_catalog() as catalog:
        conn = catalog.conn
        sha = dict(conn.execute("SELECT checkpoint_id, sha FROM checkpoints").fetchall())
        timm_ids = sorted(f"timm:{n}" for n in plan.timm)
        timm_probed = timm_ids[: PROBED * 3 // 10]
        by_downloads = sorted(plan.downloads, key=lambda c: (-plan.downloads[c], c))
        hf_probed = by_downloads[: PROBED - len(timm_probed)]
        now = utcnow()
        corpus_hash = {modality: hexdigest("corpus", name) for modality, name in CORPORA.items()}
        old_hash = {modality: hexdigest("corpus-old", name) for modality, name in CORPORA.items()}
        probed = {"text": hf_probed, "image": timm_probed}
        kappa_rows = 0
        embedding_rows: list[dict[str, Any]] = []
        for modality, members in probed.items():
            corpus, probe, pooling, dim, items = (
                ("bbc-news", "transformers-text", "last-subword", 768, 2000) if modality == "text"
                else ("sample-images", "timm-image", "pre-logits", 1024, 96))
            older = members[: len(members) // 5]
            for cid in members:
                for which, hash_ in (("new", corpus_hash[modality]), ("old", old_hash[modality])):
                    if which == "old" and cid not in older:
                        continue
                    embedding_rows.append({
                        "checkpoint_id": cid, "checkpoint_sha": sha[cid], "corpus": corpus, "corpus_hash": hash_,
                        "layer": "last", "pooling": pooling, "dtype": "float32", "probe": probe, "probe_version": "1",
                        "n_items": items, "n_kept": items - rng.randint(0, items // 50), "dim": dim,
                        "path": f"store/{hash_[:16]}/{hexdigest('file', cid, hash_)[:16]}.faiss",
                        "file_sha256": hexdigest("file", cid, hash_) + "0" * 24, "seconds": rng.uniform(0.5, 30),
                        "created_at": now - timedelta(days=30 if which == "old" else rng.uniform(0, 5))})
            # One Arrow insert: Catalog.register_embedding writes a row per statement (8 ms each here).
            embedding_batch = pa.Table.from_pylist(embedding_rows)  # noqa: F841 - read by DuckDB
            conn.execute(f"INSERT OR REPLACE INTO embeddings ({', '.join(embedding_rows[0])}) "
                         "SELECT * FROM embedding_batch")
            embedding_rows.clear()
            for hash_, group in ((corpus_hash[modality], members), (old_hash[modality], older)):
                pairs = kappa_pairs(group, plan.family_of, rng)
                _write_pairs(catalog, [(corpus, hash_, True, a, b, sha[a], sha[b], value, items, now)
                                       for (a, b), value in pairs.items()])
                kappa_rows += len(pairs)
                marks = pa.table({"corpus_hash": [hash_] * len(group), "centered": [True] * len(group),  # noqa: F841
                                  "checkpoint_id": group, "checkpoint_sha": [sha[c] for c in group],
                                  "neighbors": [KAPPA_NEIGHBORS] * len(group), "candidates": [200] * len(group),
                                  "computed_at": [now] * len(group)})
                conn.execute("INSERT OR REPLACE INTO kappa_graph SELECT * FROM marks")
        score_rows = []
        for task, modality in TASKS:
            conn.execute("INSERT INTO tasks (task, modality, source_kind, source, n_examples, n_train, n_classes, "
                         "classes, validation_fraction, seed, content_hash, path, created_at, target) "
                         "VALUES (?, ?, 'arrays', ?, 600, 480, 5, ['0', '1', '2', '3', '4'], 0.2, 0, ?, ?, ?, "
                         "'classification')",
                         [task, modality, f"/data/{task}", hexdigest("task", task), f"tasks/{task}", now])
            for cid in probed[modality]:
                if rng.random() < 0.2:
                    continue
                for metric, higher in METRICS:
                    score_rows.append((task, cid, metric, "1", rng.gauss(0, 1), higher, rng.uniform(0.01, 2), now,
                                       sha[cid], hexdigest("task", task), None, hexdigest(task, cid, metric)))
        names = ["task", "checkpoint_id", "metric", "metric_version", "value", "higher_is_better", "seconds",
                 "computed_at", "checkpoint_sha", "task_hash", "reference_task", "inputs_hash"]
        scores = pa.table({n: [r[k] for r in score_rows] for k, n in enumerate(names)})  # noqa: F841
        conn.execute(f"INSERT INTO task_scores ({', '.join(names)}) SELECT * FROM scores")
        failed = rng.sample(hf_probed + timm_probed, len(hf_probed + timm_probed) // 20)
        for cid in failed:
            catalog.record_failure(None, "probe", cid, rng.choice(("load-error", "out-of-memory", "timeout")),
                                   f"synthetic probe failure of {cid}")
        catalog.resolve_failures("probe", failed[: len(failed) // 2])
        times["probed_rows_s"] = time.perf_counter() - start
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("checkpoints", "lineage", "lineage_effective", "lineage_closure", "embeddings",
                                "kappa", "kappa_graph", "tasks", "task_scores", "failures", "crawl_runs")}
        counts["open_failures"] = conn.execute("SELECT count(*) FROM failures WHERE resolved_at IS NULL").fetchone()[0]
        counts["closure_drift"] = closure_drift(catalog)
        counts["by_source"] = dict(conn.execute("SELECT source, count(*) FROM checkpoints GROUP BY 1").fetchall())
        start = time.perf_counter()
        catalog.conn.execute("CHECKPOINT")
        catalog.publish_snapshot()
        times["snapshot_s"] = time.perf_counter() - start
    assert counts["closure_drift"] == 0, counts
    counts["kappa_pairs_written"] = kappa_rows
    return {"build_version": BUILD_VERSION, "rows": rows, "counts": counts, "times": times,
            "build_s": time.perf_counter() - started,
            "catalog_mb": (root / "catalog.duckdb").stat().st_size / 2**20}


def kappa_pairs(members: list[str], family_of: dict[str, int], rng: random.Random) -> dict[tuple[str, str], float]:
    """KAPPA_NEIGHBORS neighbours per member, from its own family when it has probed relatives."""
    by_family: dict[int, list[str]] = {}
    for cid in members:
        if cid in family_of:
            by_family.setdefault(family_of[cid], []).append(cid)
    pairs: dict[tuple[str, str], float] = {}
    for cid in members:
        relatives = [c for c in by_family.get(family_of.get(cid, -1), []) if c != cid]
        chosen = set(rng.sample(relatives, min(len(relatives), KAPPA_NEIGHBORS * 2 // 3)))
        while len(chosen) < min(KAPPA_NEIGHBORS, len(members) - 1):
            other = rng.choice(members)
            if other != cid:
                chosen.add(other)
        for other in chosen:
            related = family_of.get(other, -2) == family_of.get(cid, -1)
            pairs[tuple(sorted((cid, other)))] = rng.uniform(0.6, 0.97) if related else rng.uniform(0.05, 0.6)
    return pairs


def ensure_catalog(rows: int) -> tuple[Path, dict[str, Any]]:
    """The cached catalog of `rows` checkpoints, built when missing or made by another builder version."""
    root = REPO / "benchmarks" / "work" / f"web-{rows}"
    marker = root / "built.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        if built.get("build_version") == BUILD_VERSION and (root / "catalog.duckdb").is_file():
            print(f"catalog: cached at {root} (built in {built['build_s']:.0f} s)", flush=True)
            return root, built
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    print(f"catalog: building {rows:,} checkpoints at {root} (once; cached) ...", flush=True)
    built = build_catalog(root, rows)
    marker.write_text(json.dumps(built, indent=1, default=str))
    print(f"catalog: built in {built['build_s']:.0f} s ({json.dumps(built['times'], default=lambda x: round(x, 1))})",
          flush=True)
    return root, built


# ------------------------------------------------------------------------------------ what to ask


def page_paths(root: Path, seed: int = 0) -> dict[str, list[str]]:
    """For each page type, the URLs its clients cycle through (chosen from the catalog, read-only)."""
    import duckdb

    from hubindex.web.render import checkpoint_url

    rng = random.Random(seed)
    conn = duckdb.connect(str(root / "catalog.duckdb"), read_only=True)
    try:
        ids = [c for (c,) in conn.execute("SELECT checkpoint_id FROM checkpoints ORDER BY checkpoint_id").fetchall()]
        total = len(ids)
        rich = [c for (c,) in conn.execute("""
            SELECT checkpoint_id FROM checkpoints c
            WHERE EXISTS (SELECT 1 FROM embeddings e WHERE e.checkpoint_id = c.checkpoint_id)
              AND EXISTS (SELECT 1 FROM task_scores s WHERE s.checkpoint_id = c.checkpoint_id)
              AND (EXISTS (SELECT 1 FROM lineage_closure l WHERE l.descendant = c.checkpoint_id)
                   OR EXISTS (SELECT 1 FROM lineage_closure l WHERE l.ancestor = c.checkpoint_id))
            ORDER BY checkpoint_id""").fetchall()]
        roots = [c for (c,) in conn.execute(
            "SELECT ancestor FROM lineage_closure WHERE depth = 1 GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 10"
        ).fetchall()]
    finally:
        conn.close()
    per_page = 50
    pages = -(-total // per_page)
    filters = [
        {"library": "transformers", "pipeline": "text-generation", "q": "llama", "sort": "likes"},
        {"pipeline": "fill-mask", "q": "bert", "sort": "modified"},
        {"license": "apache-2.0", "q": "qwen", "sort": "params"},
        {"source": "timm", "q": "vit", "sort": "top1"},
        {"library": "peft", "q": "lora", "sort": "downloads", "order": "asc"},
        {"upstream": "in22k", "q": "convnext", "sort": "id"},
    ]
    return {
        "list": ["/checkpoints"],
        "list-filter": [f"/checkpoints?{urlencode(f)}" for f in filters],
        "list-deep": [f"/checkpoints?page={rng.randint(pages // 2, pages)}" for _ in range(500)],
        "checkpoint": [checkpoint_url(c) for c in rng.sample(ids, min(2000, len(ids)))],
        "checkpoint-rich": [checkpoint_url(c) for c in rng.sample(rich, min(290, len(rich))) + roots],
    }


# ------------------------------------------------------------------------------------ the load


class Server:
    """`hubindex --index ROOT serve --port 0` in a subprocess; its port from the first stdout line."""

    def __init__(self, root: Path) -> None:
        command = [str(REPO / ".venv/bin/hubindex"), "--index", str(root), "serve", "--port", "0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if "http://" not in line:
            self.process.kill()
            errors = self.process.stderr.read()[-2000:]  # type: ignore[union-attr]
            raise SystemExit(f"hubindex serve did not start: {line!r} {errors}")
        self.port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.stderr.append(line.rstrip())

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Sample:
    page: str
    seconds: float
    status: int  # 0: the connection failed
    started: float


def client(port: int, paths: dict[str, list[str]], kinds: list[str], seed: int, start: threading.Barrier,
           stop_at: list[float], out: list[Sample]) -> None:
    """One closed-loop client: a persistent connection, the next request as soon as the last is read."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start.wait()
    while time.perf_counter() < stop_at[0]:
        kind = rng.choice(kinds)
        path = rng.choice(paths[kind])
        began = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append(Sample(kind, time.perf_counter() - began, status, began))
    conn.close()


def load(server: Server, paths: dict[str, list[str]], kinds: list[str], clients: int, seconds: float,
         seed: int, during: Any = None) -> tuple[list[Sample], float, tuple[float, float]]:
    """N clients for `seconds`; returns the samples, the wall seconds until the last client finished
    and the CPU seconds used by the server and by this process (the clients). `during(stop_at)` runs
    in this thread meanwhile, if given."""
    samples: list[list[Sample]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [float("inf")]
    threads = [threading.Thread(target=client, args=(server.port, paths, kinds, seed * 1000 + k, barrier, stop_at,
                                                     samples[k]), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    cpu = server.cpu_s()
    own = os.times()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    barrier.wait()
    if during is not None:
        during(stop_at[0])
    for thread in threads:
        thread.join(timeout=seconds + 120)
    wall = time.perf_counter() - began
    after = os.times()
    return ([s for part in samples for s in part], wall,
            (server.cpu_s() - cpu, after.user + after.system - own.user - own.system))


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (p99 of 50 requests is the largest)."""
    return sorted_values[min(len(sorted_values) - 1, max(0, int(-(-q * len(sorted_values) // 1)) - 1))]


def summary(page: str, clients: int, samples: list[Sample], wall: float, cpu: tuple[float, float]) -> dict[str, Any]:
    ok = sorted(s.seconds for s in samples if s.status == 200)
    every = sorted(s.seconds for s in samples)
    errors: dict[str, int] = {}
    for s in samples:
        if s.status != 200:
            errors[str(s.status)] = errors.get(str(s.status), 0) + 1
    row = {"page": page, "clients": clients, "requests": len(samples), "seconds": wall,
           "throughput_rps": len(samples) / wall if wall else 0.0, "errors": sum(errors.values()),
           "errors_by_status": errors, "server_cpu_s": cpu[0], "client_cpu_s": cpu[1],
           "server_cpu_ms_per_request": 1000 * cpu[0] / len(samples) if samples else None}
    if every:
        row |= {"median_ms": 1000 * statistics.median(every), "p90_ms": 1000 * quantile(every, 0.9),
                "p99_ms": 1000 * quantile(every, 0.99), "max_ms": 1000 * every[-1],
                "median_ok_ms": 1000 * statistics.median(ok) if ok else None}
    return row


def writer_trials(root: Path, stop_at: float, out: list[dict[str, Any]]) -> None:
    """Open the catalog for writing as a nightly stage does, again and again until stop_at."""
    from hubindex.errors import HubindexError
    from hubindex.nightly.stages import PatientIndex

    while time.perf_counter() < stop_at - 2.0:
        began = time.perf_counter()
        try:
            catalog = PatientIndex(root, busy_timeout_s=60).open_catalog()
        except HubindexError as exc:  # CatalogBusyError: still held after busy_timeout_s
            out.append({"acquired": False, "wait_s": time.perf_counter() - began, "error": str(exc)[:200]})
            continue
        waited = time.perf_counter() - began
        try:
            catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone()
        finally:
            catalog.close()
        out.append({"acquired": True, "wait_s": waited, "held_s": time.perf_counter() - began - waited})
        print(f"  writer: acquired after {waited:.2f} s", flush=True)
        time.sleep(1.0)


# ------------------------------------------------------------------------------------ where time goes


def profile(root: Path, paths: dict[str, list[str]], page: str, requests: int, seed: int = 5) -> dict[str, Any]:
    """One client's requests of `page`, in this process, through the server's own page functions:
    the whole page's time and the parts of it - opening the shared instance (connect + schema check),
    preparing the request's cursor (the temp views and macros), each SQL statement (literals
    folded, from execute to fetch) and rendering. The server must not be running (it would share
    the instance differently); reads the reader's internals, so it follows hubindex/web."""
    import re
    from collections import defaultdict
    from contextlib import contextmanager
    from urllib.parse import unquote, urlsplit

    from starlette.requests import Request

    from hubindex.plugins import load_default_plugins
    from hubindex.web import pages_checkpoints, reader
    from hubindex.web.app import ServeSettings, create_app

    load_default_plugins()
    app = create_app(ServeSettings(root))
    parts: dict[str, list[float]] = defaultdict(list)

    def timed(key: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[key].append(time.perf_counter() - began)
        return wrapper

    class Cursor:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, sql: str, params: Any = None) -> Any:
            key = "SQL " + re.sub(r"'[^']*'", "?", " ".join(sql.split()))[:120]
            began = time.perf_counter()
            result = self.conn.execute(sql, params) if params is not None else self.conn.execute(sql)
            cursor = self

            class Fetch:
                description = result.description

                def fetchall(self) -> Any:
                    return cursor._done(key, began, result.fetchall())

                def fetchone(self) -> Any:
                    return cursor._done(key, began, result.fetchone())
            return Fetch()

        @staticmethod
        def _done(key: str, began: float, value: Any) -> Any:
            parts[key].append(time.perf_counter() - began)
            return value

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

    saved = (reader.SharedReader._open, reader.SharedReader.reading, list(reader.CONNECTION_PREPARERS),
             pages_checkpoints.respond)
    original_reading = reader.SharedReader.reading

    @contextmanager
    def reading(self: Any, timeout_s: float) -> Iterator[Any]:
        with original_reading(self, timeout_s) as catalog:
            catalog.conn = Cursor(catalog.conn)
            yield catalog

    preparers = list(reader.CONNECTION_PREPARERS)

    def prepare(cursor: Any) -> None:
        for one in preparers:
            one(cursor)

    reader.SharedReader._open = timed("open the shared instance (connect, schema check)", saved[0])
    reader.SharedReader.reading = reading
    reader.CONNECTION_PREPARERS[:] = [timed("prepare the cursor (temp views, macros)", prepare)]
    pages_checkpoints.respond = timed("render (template)", saved[3])
    rng = random.Random(seed)
    whole = []
    try:
        for k in range(requests + 3):
            url = urlsplit(rng.choice(paths[page]))
            scope = {"type": "http", "method": "GET", "path": unquote(url.path), "raw_path": url.path.encode(),
                     "query_string": url.query.encode(), "headers": [(b"host", b"127.0.0.1")], "app": app,
                     "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80), "path_params": {}}
            endpoint = pages_checkpoints.checkpoint_list
            if url.path.startswith("/checkpoints/"):
                scope["path_params"] = {"checkpoint_id": unquote(url.path[len("/checkpoints/"):])}
                endpoint = pages_checkpoints.checkpoint_page
            if k == 3:
                parts.clear()
                whole.clear()
            began = time.perf_counter()
            response = endpoint(Request(scope))
            whole.append(time.perf_counter() - began)
            assert response.status_code == 200, (url, response.status_code)
    finally:
        reader.SharedReader._open, reader.SharedReader.reading = saved[0], saved[1]
        reader.CONNECTION_PREPARERS[:] = saved[2]
        pages_checkpoints.respond = saved[3]
    rows = [{"part": key, "ms_per_request": 1000 * sum(v) / requests, "calls": len(v),
             "median_ms": 1000 * statistics.median(v)} for key, v in parts.items()]
    rows.sort(key=lambda r: -r["ms_per_request"])
    return {"page": page, "requests": requests, "median_ms": 1000 * statistics.median(whole),
            "mean_ms": 1000 * statistics.mean(whole), "parts": rows}


def profile_text(found: dict[str, Any], top: int = 8) -> str:
    lines = [f"{found['page']}: {found['requests']} requests in process, one at a time: median "
             f"{found['median_ms']:.1f} ms, mean {found['mean_ms']:.1f} ms; of it (ms per request):"]
    lines += [f"  {r['ms_per_request']:7.2f}  {r['part']}" for r in found["parts"][:top]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the report


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| page | clients | requests | req/s | median ms | p90 ms | p99 ms | max ms | errors "
             "| server CPU ms/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        errors = str(r["errors"]) + (f" ({', '.join(f'{k}: {v}' for k, v in r['errors_by_status'].items())})"
                                     if r["errors"] else "")
        lines.append(f"| {r['page']} | {r['clients']} | {r['requests']:,} | {r['throughput_rps']:.1f} | "
                     f"{fmt_ms(r.get('median_ms'))} | {fmt_ms(r.get('p90_ms'))} | {fmt_ms(r.get('p99_ms'))} | "
                     f"{fmt_ms(r.get('max_ms'))} | {errors} | {fmt_ms(r['server_cpu_ms_per_request'])} |")
    return "\n".join(lines)


def writer_text(writer: dict[str, Any]) -> str:
    waits = [t["wait_s"] for t in writer["trials"] if t["acquired"]]
    failed = [t for t in writer["trials"] if not t["acquired"]]
    text = (f"Writer under load ({writer['clients']} clients on all page types, "
            f"{writer['load']['requests']:,} requests, "
            f"{writer['load']['throughput_rps']:.1f} req/s, median {fmt_ms(writer['load'].get('median_ms'))} ms, "
            f"p99 {fmt_ms(writer['load'].get('p99_ms'))} ms, {writer['load']['errors']} errors): "
            f"{len(waits)} write opens")
    if waits:
        text += (f", waited median {statistics.median(waits):.2f} s, max {max(waits):.2f} s "
                 f"(each: {', '.join(f'{w:.2f}' for w in waits)} s)")
    if failed:
        text += f"; {len(failed)} gave up after {max(t['wait_s'] for t in failed):.0f} s"
    return text + "."


def code_state() -> dict[str, Any]:
    """The commit, and a hash of the serving code as it is in the tree (it may differ from the commit)."""
    files = sorted([*(REPO / "hubindex" / "web").glob("*.py"), *(REPO / "hubindex" / "web" / "templates").glob("*"),
                    REPO / "hubindex" / "cards.py", REPO / "hubindex" / "index.py",
                    REPO / "hubindex" / "nightly" / "stages.py", REPO / "hubindex" / "waiting_writers.py"])
    digest = hashlib.sha1()
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "hubindex"], capture_output=True,
                           text=True)
    return {"commit": head.stdout.strip(), "hubindex_modified": bool(dirty.stdout.strip()),
            "serving_code_sha1": digest.hexdigest()[:12]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="checkpoints in the catalog (default 100,000)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=None, help="per (page type, clients) setting (default 10)")
    parser.add_argument("--writer-seconds", type=float, default=None,
                        help="the writer phase at max(--clients) (default 30; --quick 8)")
    parser.add_argument("--pages", nargs="+", choices=PAGE_TYPES, default=list(PAGE_TYPES))
    parser.add_argument("--profile", nargs="*", choices=PAGE_TYPES, default=list(PAGE_TYPES),
                        help="page types to profile in process after the load (default: all; none: --profile)")
    parser.add_argument("--profile-requests", type=int, default=None, help="per profiled page type (default 100)")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 3 s per setting")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json and table.md (default benchmarks/results/web, "
                             "--quick: benchmarks/results/quick/web)")
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.quick else 100_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    writer_seconds = args.writer_seconds if args.writer_seconds is not None else (8.0 if args.quick else 30.0)
    out = args.out or REPO / "benchmarks" / "results" / ("quick/web" if args.quick else "web")
    load_before = load_text()
    print(f"load: {load_before} ({os.cpu_count()} CPUs)", flush=True)
    root, built = ensure_catalog(rows)
    paths = page_paths(root)
    settings = [(page, n) for page in args.pages for n in args.clients]
    profile_requests = args.profile_requests or (30 if args.quick else 100)
    bound = (len(settings) * seconds + writer_seconds + len(args.pages) * WARMUP_REQUESTS * 2.0
             + len(args.profile) * profile_requests * 0.5 + SLACK_S)
    print(f"bound: {len(settings)} settings x {seconds:g} s + writer phase {writer_seconds:g} s + warm-up, "
          f"profiles and slack: nothing starts after {bound:.0f} s", flush=True)
    deadline = time.perf_counter() + bound
    server = Server(root)
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    writer: dict[str, Any] | None = None
    try:
        warm = {}
        for page in args.pages:
            began = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            statuses = []
            for path in paths[page][:WARMUP_REQUESTS]:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
            conn.close()
            warm[page] = {"seconds": time.perf_counter() - began, "statuses": statuses}
            if any(s != 200 for s in statuses):
                print(f"warning: warm-up of {page} answered {statuses}", flush=True)
        print(f"warm-up: {json.dumps({k: round(v['seconds'], 2) for k, v in warm.items()})} s", flush=True)
        for k, (page, n) in enumerate(settings):
            if time.perf_counter() + seconds > deadline:
                skipped.append(f"{page}/{n}")
                continue
            samples, wall, cpu = load(server, paths, [page], n, seconds, seed=k)
            results.append(summary(page, n, samples, wall, cpu))
            r = results[-1]
            print(f"  {page:16s} N={n:<3d} {r['requests']:6,d} req {r['throughput_rps']:7.1f}/s "
                  f"median {fmt_ms(r.get('median_ms'))} p99 {fmt_ms(r.get('p99_ms'))} ms, "
                  f"{r['errors']} errors (load {load_text()})", flush=True)
        if writer_seconds > 0 and time.perf_counter() + writer_seconds <= deadline:
            n = max(args.clients)
            trials: list[dict[str, Any]] = []
            samples, wall, cpu = load(server, paths, list(args.pages), n, writer_seconds, seed=777,
                                      during=lambda stop_at: writer_trials(root, stop_at, trials))
            writer = {"clients": n, "seconds": writer_seconds, "trials": trials,
                      "load": summary("all", n, samples, wall, cpu)}
            print(writer_text(writer), flush=True)
        elif writer_seconds > 0:
            skipped.append("writer")
    finally:
        server.stop()
    profiles = []
    for page in args.profile:
        if time.perf_counter() + profile_requests * 0.5 > deadline:
            skipped.append(f"profile {page}")
            continue
        profiles.append(profile(root, paths, page, profile_requests))
    load_after = load_text()
    text = table(results)
    print(f"\nload: {load_before} before, {load_after} after ({os.cpu_count()} CPUs)")
    if skipped:
        print(f"skipped (past the bound): {', '.join(skipped)}")
    print(text)
    if writer:
        print("\n" + writer_text(writer))
    for found in profiles:
        print("\n" + profile_text(found))
    if server.stderr:
        print("\nserver stderr (last lines):\n" + "\n".join(server.stderr[-10:]))
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["benchmarks/bench_web.py", *sys.argv[1:]]), "rows": rows, "seconds": seconds,
              "clients": args.clients, "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
              "bound_s": bound, "skipped": skipped,
              "catalog": {k: built[k] for k in ("counts", "catalog_mb", "build_s")},
              "code": code_state(), "warmup": warm, "results": results, "writer": writer, "profiles": profiles,
              "server_stderr_tail": server.stderr[-20:]}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "table.md").write_text(f"`{report['command']}`: {rows:,} rows, {seconds:g} s per setting, "
                                  f"{os.cpu_count()} CPUs, load average {load_before} before, {load_after} after.\n\n"
                                  + text + ("\n\n" + writer_text(writer) if writer else "")
                                  + "".join("\n\n```\n" + profile_text(f) + "\n```" for f in profiles) + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'}")


if __name__ == "__main__":
    main()
