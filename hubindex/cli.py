"""The `hubindex` command line. Plugins add commands through the `register_commands` hook."""

from __future__ import annotations

import csv
import decimal
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import duckdb

from hubindex import __version__
from hubindex.catalog import DEFAULT_ROW_CAP, DEFAULT_TIMEOUT_S, run_readonly_query
from hubindex.errors import HubindexError, UsageError
from hubindex.index import INDEX_ENV, Index, resolve_index_dir
from hubindex.options import FiniteFloatRange, ParameterCount
from hubindex.plugins import REGISTRIES, crawlers, describe_plugins, known_names, pm


# A share strictly between 0 and 1 (e.g. of examples held out).
FRACTION = FiniteFloatRange(0.0, 1.0, min_open=True, max_open=True)


class HubindexGroup(click.Group):
    """Lists commands in the order they were added (the order of the workflow)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=HubindexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubindex")
@click.option(
    "--index",
    "index_dir",
    metavar="DIR",
    envvar=INDEX_ENV,
    help=f"Index folder holding catalog.duckdb [env {INDEX_ENV}; default: the embedded index_data/].",
)
@click.pass_context
def cli(ctx: click.Context, index_dir: str | None) -> None:
    """Index public model hubs and answer which checkpoints to use.

    \b
    Typical flow:
      hubindex crawl timm                  # timm registry + ImageNet results
      hubindex crawl hf --limit 500        # Hugging Face models, incrementally
      hubindex sql "SELECT checkpoint_id, in1k_top1 FROM checkpoints ORDER BY 2 DESC LIMIT 5"
    """
    ctx.obj = Index(resolve_index_dir(index_dir))


# ------------------------------------------------------------------------------------ plugins


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins, the hooks they implement and what they register."""
    described = describe_plugins()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    from tabulate import tabulate

    rows = []
    for entry in described:
        registers = "; ".join(f"{k}: {', '.join(entry[k])}" for k in REGISTRIES if k in entry)
        rows.append([entry["name"], "built-in" if entry["builtin"] else "third-party",
                     ", ".join(entry["hooks"]), registers])
    click.echo(tabulate(rows, headers=["plugin", "kind", "hooks", "registers"]))


def print_failures(failures: list[Any], shown: int = 10) -> None:
    """The first failures of a run on stderr; the rest are in the failures table."""
    for failure in failures[:shown]:
        click.echo(f"  failed {failure.subject}: {failure.kind}: {failure.message}", err=True)
    if len(failures) > shown:
        click.echo(f"  ... {len(failures) - shown} more in the failures table", err=True)


# ------------------------------------------------------------------------------------ crawl


class CrawlGroup(HubindexGroup):
    """One subcommand per registered crawler, built from the crawler's own CLI parameters."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(crawlers())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        registration = crawlers().get(name)
        if registration is None:
            return None
        crawler_cls = registration.component

        @click.pass_obj
        def run(index: Index, **options: Any) -> None:
            from hubindex.pipeline import run_crawl

            summary = run_crawl(index, crawler_cls(**options))
            click.echo(summary.line())
            print_failures(summary.failures)

        return click.Command(
            name,
            callback=run,
            params=crawler_cls.cli_params(),
            help=crawler_cls.__doc__,
            short_help=crawler_cls.description,
        )

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if not name.startswith("-") and self.get_command(ctx, name) is None:
            known = known_names(crawlers())
            raise UsageError(f"unknown crawl source {name!r}; available sources: {known}")
        return super().resolve_command(ctx, args)


@cli.group("crawl", cls=CrawlGroup)
def crawl_group() -> None:
    """Pull checkpoint metadata from a source into the catalog (incremental, resumable)."""


# ------------------------------------------------------------------------------------ check


@cli.command("check")
@click.option("--repair", is_flag=True,
              help="Remove what can be recomputed: rows whose stored files are missing or changed, orphan "
                   "files and rows; replace an unreadable catalog by its readable snapshot.")
@click.pass_obj
def check_command(index: Index, repair: bool) -> None:
    """Verify the index: catalog integrity, stored files and their hashes, orphans, migrations.

    \b
    One line per problem on stdout; exit 0 when the index is sound (or --repair mended every
    problem), 1 otherwise. Checks read the whole catalog and hash every stored file, which takes
    a while on a large index.

    \b
    Examples:
      hubindex check
      hubindex --index /data/hub check --repair
    """
    from hubindex.check import check_index

    report = check_index(index, repair=repair)
    for problem in report.problems:
        click.echo(f"problem: {problem.line()}")
    for done in report.repaired:
        click.echo(f"repaired: {done}")
    checked = ", ".join(f"{count:,} {what}" for what, count in report.checked.items())
    left = report.unrepaired
    if left:
        raise HubindexError(f"{len(left)} problem(s) in {index.root}" + (f" (checked {checked})" if checked else "")
                            + ("; `hubindex check --repair` removes what can be recomputed"
                               if not repair and any(p.repair for p in left) else ""))
    click.echo(f"index {index.root} is sound: checked {checked}" if not report.problems else
               f"index {index.root} repaired: {len(report.repaired)} repair(s)")


# ------------------------------------------------------------------------------------ sql


@cli.command("sql")
@click.argument("query")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="Named parameter, used in the query as $NAME (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=DEFAULT_ROW_CAP, show_default=True,
              help="Return at most this many rows.")
@click.option("--timeout", type=FiniteFloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Stop the query after this many seconds.")
@click.pass_obj
def sql_command(index: Index, query: str, params: tuple[tuple[str, str], ...], fmt: str,
                max_rows: int, timeout: float) -> None:
    """Run a read-only SQL query on the catalog.

    \b
    Tables: checkpoints, crawl_runs, failures, schema_migrations (see README).
    Writes, ATTACH, COPY, file readers and INSTALL/LOAD are refused.

    \b
    Example:
      hubindex sql "SELECT checkpoint_id, in1k_top1 FROM checkpoints
                    WHERE params_total < \\$max ORDER BY in1k_top1 DESC LIMIT 5" -p max 30000000
    """
    result = run_readonly_query(index.catalog_path, query, dict(params), row_cap=max_rows, timeout_s=timeout,
                                snapshot_fallback=True)
    if result.snapshot is not None:
        from hubindex.nightly import describe_writer

        writer = describe_writer(index.root, result.snapshot.writer_pid)
        click.echo(f"hubindex: the catalog is being written by {writer}; answering from its read snapshot of "
                   f"{result.snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", err=True)
    click.echo(format_rows(result.columns, result.rows, fmt), nl=False)
    if result.truncated:
        click.echo(f"hubindex: showing the first {max_rows} rows; raise --max-rows for more", err=True)


def _jsonable(value: Any) -> Any:
    """A query value as plain JSON data: nested lists/structs/maps kept, the rest as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN/Infinity are not JSON
    if isinstance(value, decimal.Decimal):
        return _jsonable(float(value))  # DuckDB reads 1.5 as DECIMAL(2,1)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)  # dates, times, UUIDs, ...


def _cell(value: Any) -> Any:
    """A value for one table or CSV cell: nested values written as JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render rows as an aligned table, CSV or a JSON list of objects."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_jsonable, row))) for row in rows], indent=2,
                          ensure_ascii=False, allow_nan=False) + "\n"
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buffer.getvalue()
    from tabulate import tabulate

    return tabulate(cells, headers=columns, tablefmt="simple", disable_numparse=True) + "\n"


# ------------------------------------------------------------------------------------ probe


def executor_options(command: Any) -> Any:
    """--executor, --address and --workers: where probe and score run their models."""
    command = click.option("--workers", type=click.IntRange(1, None), default=None,
                           help="Ray: checkpoints at once [default: a local instance's CPU count, or what the "
                                "cluster fits].")(command)
    command = click.option("--address", metavar="ADDR",
                           help="Ray: join this cluster (e.g. auto, ray://head:10001) instead of starting "
                                "a local instance.")(command)
    return click.option("--executor", "executor_kind", default="local", show_default=True, metavar="NAME",
                        help="Where models run: local (this process) or ray (one task per checkpoint).")(command)


@cli.command("probe")
@click.argument("checkpoint_ids", nargs=-1, metavar="[CHECKPOINT_ID]...")
@click.option("--corpus", "corpus_spec", metavar="NAME[:ARG]",
              help="Probing corpus, e.g. bbc-news, sample-images, images:/path [default: each probe's "
                   "default corpus: bbc-news for text, sample-images for images].")
@click.option("--where", metavar="SQL-CONDITION",
              help="Probe the checkpoints matching this condition on the checkpoints table (read-only).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where models run; auto = cuda when available.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Lines (text) or images per forward pass [default: the probe's, 32].")
@click.option("--max-items", type=click.IntRange(1, None), default=None,
              help="Corpus size: words for text, images for image corpora [default: the corpus's].")
@click.option("--max-params", type=ParameterCount(), default=None,
              help="Skip checkpoints with more parameters (e.g. 7B), recorded as too-large [default: those "
                   "whose weights would take over 60% of the memory at hand].")
@executor_options
@click.pass_obj
def probe_command(index: Index, checkpoint_ids: tuple[str, ...], corpus_spec: str | None, where: str | None,
                  device: str, batch_size: int | None, max_items: int | None, max_params: int | None,
                  executor_kind: str, address: str | None, workers: int | None) -> None:
    """Run checkpoints on a probing corpus and store their features (one row per item).

    \b
    Text (transformers, incl. CLIP/SigLIP text towers): last hidden state at each word's last
      sub-word token, the line tokenized as running text.
    Images (timm): pre-logits features, with the model's own preprocessing.
    Images (transformers, incl. CLIP/SigLIP vision towers): the family's pooled features, with
      the checkpoint's own image processor.
    Checkpoints are routed by their config (model_type, architectures), library and pipeline tag;
    one no probe takes is recorded in `failures` as unsupported, with the reason. Features
    already stored for the same checkpoint sha, corpus content and precision are reused without
    loading the model; checkpoints that fail are recorded in `failures` and the run goes on.
    Ctrl-C stops the run (exit 130); finished checkpoints are kept.

    \b
    Examples:
      hubindex probe --where "library_name = 'timm'" --corpus sample-images --max-items 64
      hubindex probe local:/models/bert-tiny --corpus text:notes/ --max-items 5000
      hubindex probe --where true --executor ray --workers 2
    """
    from hubindex.executors import make_executor
    from hubindex.probing import run_probe, select_checkpoints

    with make_executor(executor_kind, address, workers) as executor:
        ids = select_checkpoints(index, where, checkpoint_ids)
        summary = run_probe(index, ids, corpus_spec, device=device, batch_size=batch_size, max_items=max_items,
                            executor=executor, max_params=max_params)
    click.echo(summary.line())
    print_failures(summary.failures)


# ------------------------------------------------------------------------------------ features


@cli.group("features")
def features_group() -> None:
    """Feature matrices computed elsewhere (a GPU cluster, a benchmark)."""


@features_group.command("import")
@click.argument("pairs", nargs=-1, metavar="[CHECKPOINT_ID=FILE.npy]...")
@click.option("--from", "folders", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="A folder with features.csv (columns checkpoint_id, file[, sha]) and the .npy files it names "
                   "(repeatable).")
@click.option("--corpus", "corpus_spec", required=True, metavar="NAME[:ARG]",
              help="The corpus the rows are aligned with, e.g. bbc-news, images:/path.")
@click.option("--max-items", type=click.IntRange(1, None), default=None,
              help="Corpus size, as given to `hubindex probe` [default: the corpus's].")
@click.option("--layer", default="last", show_default=True, help="What layer the features are from.")
@click.option("--pooling", default="imported", show_default=True, help="How they were pooled (part of the key).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="The precision the model ran in (part of the key).")
@click.option("--register-new", is_flag=True,
              help="Add catalog rows (source 'import') for ids the catalog lacks, keyed by the manifest's sha or "
                   "else the file's sha256.")
@click.pass_obj
def features_import_command(index: Index, pairs: tuple[str, ...], folders: tuple[Path, ...], corpus_spec: str,
                            max_items: int | None, layer: str, pooling: str, dtype: str, register_new: bool) -> None:
    """Register feature matrices computed elsewhere, keyed and stored as probed ones are.

    \b
    Each .npy matrix has one row per corpus item, in the corpus' order (a row of NaN: a dropped
    item). It is written to the embedding store and registered in `embeddings` (probe 'import')
    under (checkpoint sha, corpus content hash, layer, pooling, dtype); kappa, neighbours, MMI and
    scores use it like probed features. Matrices already registered unchanged are skipped.

    \b
    Examples:
      hubindex features import hf:org/model=feats.npy --corpus bbc-news
      hubindex features import --from cluster-run/ --corpus sample-images --pooling pre-logits
    """
    from hubindex.feature_import import import_features, read_sources
    from hubindex.probing import make_corpus

    files = read_sources(list(pairs), list(folders))
    corpus = make_corpus(corpus_spec, max_items).load()
    summary = import_features(index, corpus, files, layer=layer, pooling=pooling, dtype=dtype,
                              register_new=register_new)
    click.echo(summary.line(corpus))


# ------------------------------------------------------------------------------------ kappa


def _load_feature_arrays(paths: tuple[str, ...]) -> list[Any]:

    if len(paths) < 2:
        raise UsageError("--arrays needs at least two .npy files (one feature matrix per checkpoint)")
    from hubindex.tasks import load_feature_matrix

    arrays = [load_feature_matrix(Path(path), "--arrays") for path in paths]
    rows = {a.shape[0] for a in arrays}
    if len(rows) != 1:
        raise UsageError(f"feature matrices must have the same number of rows (aligned items), got {sorted(rows)}")
    return arrays


def _matrix_text(labels: list[str], values: Any) -> str:
    from tabulate import tabulate

    return tabulate([[label, *row] for label, row in zip(labels, values.tolist())],
                    headers=["", *labels], floatfmt=".4f") + "\n"


@cli.command("kappa")
@click.argument("files", nargs=-1, metavar="[FILES]...")
@click.option("--arrays", "array_mode", is_flag=True,
              help="Compute kappa for feature matrices given as .npy FILES (rows aligned) instead of the catalog.")
@click.option("--corpus", metavar="NAME", help="Probed corpus (name or content hash) [default: the only one].")
@click.option("--centered/--uncentered", default=True, show_default=True,
              help="Mean-centre features first (linear CKA, as the paper) or not.")
@click.option("--dense-max", type=click.IntRange(2), default=None, metavar="N",
              help="Above N probed checkpoints, a sparse kappa graph instead of all pairs [default: 10000].")
@click.option("--graph-neighbors", type=click.IntRange(1, 10_000), default=None, metavar="K",
              help="Sparse graph: pairs kept per checkpoint, its K highest exact kappas [default: 32].")
@click.option("--graph-candidates", type=click.IntRange(1, 100_000), default=None, metavar="C",
              help="Sparse graph: fingerprint candidates re-ranked by exact kappa per checkpoint [default: 128].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def kappa_command(index: Index, files: tuple[str, ...], array_mode: bool, corpus: str | None,
                  centered: bool, dense_max: int | None, graph_neighbors: int | None,
                  graph_candidates: int | None, as_json: bool) -> None:
    """Task-space covariance kappa (kernel alignment) between checkpoints.

    \b
    Catalog mode: computes the pairs the catalog lacks for every checkpoint probed on a corpus,
    stores them in the `kappa` table and refreshes the task fingerprints used by `neighbors`.
    Above --dense-max checkpoints, each checkpoint gets exact kappa to its --graph-neighbors
    nearest of --graph-candidates found by fingerprint search (a sparse graph, same table).
    Array mode, for researchers:  hubindex kappa --arrays A.npy B.npy C.npy [--json]
    """
    if files and not array_mode:
        raise UsageError("FILES are only taken with --arrays")
    from hubindex.relate import DENSE_MAX, GraphSettings

    graph = GraphSettings()
    graph = GraphSettings(graph_neighbors or graph.neighbors, graph_candidates or graph.candidates)
    if graph.neighbors > graph.candidates:
        raise UsageError(f"--graph-neighbors {graph.neighbors} exceeds --graph-candidates {graph.candidates}; "
                         "neighbours are chosen among the candidates")
    if array_mode:
        from hubindex.kappa import kappa_matrix

        try:
            result = kappa_matrix(_load_feature_arrays(files), centered=centered)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        counts = sorted(set(result.n_items.ravel().tolist()))
        n_items = counts[0] if len(counts) == 1 else result.n_items.tolist()
        if as_json:
            click.echo(json.dumps({"kappa": result.values.tolist(), "n_items": n_items}))
        else:
            click.echo(_matrix_text([Path(f).stem for f in files], result.values), nl=False)
        return

    from tqdm.auto import tqdm

    from hubindex.fingerprints import update_fingerprints
    from hubindex.relate import kappa_matrix_from_catalog, resolve_corpus, update_kappa

    with index.open_catalog() as catalog:
        ref = resolve_corpus(catalog, corpus)
        with tqdm(desc="kappa pairs", unit=" pair", disable=None) as bar:
            update = update_kappa(catalog, index.root, ref, centered, progress=bar.update,
                                  dense_max=dense_max or DENSE_MAX, graph=graph)
        added, kept = update_fingerprints(catalog, index.root, ref)
        shown = as_json or update.checkpoints <= 12  # a large matrix is for SQL, not the terminal
        ids, values, counts = kappa_matrix_from_catalog(catalog, ref, centered) if shown else ([], None, None)
    if as_json:
        click.echo(json.dumps({"corpus": ref.name, "corpus_hash": ref.content_hash, "checkpoints": ids,
                               "kappa": values.tolist(), "n_items": counts.tolist()}))
        return
    click.echo(update.line() + f"; fingerprints: {added} new, {kept} kept")
    if shown:
        from hubindex.plots import short_name

        click.echo(_matrix_text([short_name(i.rsplit("/", 1)[-1], 28) for i in ids], values), nl=False)


@cli.command("neighbors")
@click.argument("checkpoint_id")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="How many neighbours.")
@click.option("--corpus", metavar="NAME", help="Probed corpus (name or content hash) [default: the only one].")
@click.option("--candidates", type=click.IntRange(1, 100_000), default=None, metavar="N",
              help="Fingerprint candidates re-ranked by exact kappa [default: max(10 k, 100)].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def neighbors_command(index: Index, checkpoint_id: str, k: int, corpus: str | None, candidates: int | None,
                      as_json: bool) -> None:
    """Checkpoints with the highest kappa to CHECKPOINT_ID: fingerprint search, then exact kappa.

    The --candidates checkpoints with the highest fingerprint estimate are re-ranked by exact
    kappa from their stored features; a neighbour is missed only if its estimate is not among them.
    """
    from hubindex.fingerprints import nearest_checkpoints
    from hubindex.relate import resolve_corpus

    with index.open_catalog(read_only=True) as catalog:
        ref = resolve_corpus(catalog, corpus)
        found = nearest_checkpoints(catalog, index.root, ref, checkpoint_id, k, candidates=candidates)
    if as_json:
        click.echo(json.dumps([{"checkpoint_id": c, "kappa": v, "kappa_estimate": e} for c, v, e in found]))
    else:
        click.echo(format_rows(["checkpoint_id", "kappa", "kappa_estimate"],
                               [(c, f"{v:.4f}", f"{e:.4f}") for c, v, e in found], "table"), nl=False)


@cli.group("plot")
def plot_group() -> None:
    """Draw figures from the catalog."""


@plot_group.command("kappa")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--corpus", metavar="NAME", help="Probed corpus (name or content hash) [default: the only one].")
@click.option("--centered/--uncentered", default=True, show_default=True)
@click.pass_obj
def plot_kappa_command(index: Index, out: Path, corpus: str | None, centered: bool) -> None:
    """Heatmap of kappa ordered by a ward-linkage dendrogram, labelled with checkpoint names."""
    from hubindex.plots import plot_kappa
    from hubindex.relate import kappa_matrix_from_catalog, resolve_corpus

    with index.open_catalog(read_only=True) as catalog:
        ref = resolve_corpus(catalog, corpus)
        ids, values, _ = kappa_matrix_from_catalog(catalog, ref, centered)
    if len(ids) < 2:
        raise HubindexError(f"kappa on {ref.name} covers {len(ids)} checkpoint(s); run `hubindex kappa` after probing more")
    plot_kappa(ids, values, out, title=f"kappa on {ref.name}")
    click.echo(f"wrote {out}")


# ------------------------------------------------------------------------------------ tasks


@cli.group("task")
def task_group() -> None:
    """Labeled tasks that checkpoints are scored on."""


@task_group.command("add")
@click.argument("name")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="A folder with one sub-folder of images per class.")
@click.option("--csv", "csv_file", type=click.Path(path_type=Path), metavar="FILE",
              help="A CSV file with a header row; name the columns with --text-col and --label-col.")
@click.option("--arrays", type=(click.Path(path_type=Path), click.Path(path_type=Path)), metavar="X.npy Y.npy",
              default=None, help="Examples X (images (n,h,w[,c]) or a string array of texts) and labels y (n,).")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="A `datasets` dataset saved with save_to_disk.")
@click.option("--text-col", metavar="COLUMN", help="Column of texts (--csv, --dataset).")
@click.option("--image-col", metavar="COLUMN", help="Column of images (--dataset) [default: its only image column].")
@click.option("--label-col", metavar="COLUMN", help="Column of class labels (--csv, --dataset).")
@click.option("--validation-fraction", type=FRACTION, default=0.2, show_default=True,
              help="Share of each class held out for validation.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the train/validation split (and of seeded metrics).")
@click.option("--replace", is_flag=True, help="Replace a task of the same name that holds other data.")
@click.pass_obj
def task_add_command(index: Index, name: str, images_dir: Path | None, csv_file: Path | None,
                     arrays: tuple[Path, Path] | None, dataset_dir: Path | None, text_col: str | None,
                     image_col: str | None, label_col: str | None, validation_fraction: float, seed: int,
                     replace: bool) -> None:
    """Add a labeled task: check its examples and labels, split them (seeded, stratified) and
    keep a copy in the index.

    \b
    Examples:
      hubindex task add flowers --images ~/data/flowers        # flowers/daisy/*.jpg, flowers/rose/*.jpg
      hubindex task add reviews --csv reviews.csv --text-col text --label-col stars
      hubindex task add digits --arrays X.npy y.npy
      hubindex task add news --dataset ./ag_news_train --text-col text --label-col label
    """
    from hubindex import tasks

    given = [flag for flag, value in (("--images", images_dir), ("--csv", csv_file), ("--arrays", arrays),
                                      ("--dataset", dataset_dir)) if value is not None]
    if len(given) != 1:
        raise UsageError("give exactly one source of examples: --images DIR, --csv FILE, --arrays X.npy y.npy "
                         f"or --dataset DIR{' (got ' + ', '.join(given) + ')' if given else ''}")
    tasks.validate_task_name(name)
    if images_dir is not None:
        examples = tasks.read_image_folder(images_dir)
    elif csv_file is not None:
        examples = tasks.read_csv(csv_file, text_col, label_col)
    elif arrays is not None:
        examples = tasks.read_arrays(*arrays)
    else:
        examples = tasks.read_dataset(dataset_dir, text_col, image_col, label_col)
    added = tasks.add_task(index, name, examples, validation_fraction, seed, replace)
    click.echo(added.line())


@task_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def task_list_command(index: Index, as_json: bool) -> None:
    """List the tasks."""
    from hubindex.tasks import describe_task, task_rows

    with index.open_catalog(read_only=True) as catalog:
        rows = [describe_task(row) for row in task_rows(catalog)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(format_rows(list(rows[0]), [tuple(r.values()) for r in rows], "table"), nl=False)
    else:
        click.echo("no tasks yet; add one with `hubindex task add`")


@task_group.command("remove")
@click.argument("name")
@click.pass_obj
def task_remove_command(index: Index, name: str) -> None:
    """Remove a task, its scores and its stored examples."""
    from hubindex.tasks import remove_task

    removed = remove_task(index, name)
    click.echo(f"removed task {name!r} and {removed} scores")


# ------------------------------------------------------------------------------------ scores


@cli.command("score")
@click.argument("checkpoint_ids", nargs=-1, metavar="[CHECKPOINT_ID]...")
@click.option("--task", "task_name", required=True, metavar="NAME", help="The task (see `hubindex task list`).")
@click.option("--metric", "metric_names", multiple=True, metavar="NAME",
              help="A metric to compute (repeatable) [default: every installed metric].")
@click.option("--where", metavar="SQL-CONDITION",
              help="Score the checkpoints matching this condition on the checkpoints table [default: all].")
@click.option("--reference-task", metavar="NAME", help="Reference task for metrics that need one (task-relatedness).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where models run; auto = cuda when available.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Examples per forward pass [default: the probe's, 32].")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON rows instead of a table.")
@click.pass_obj
def score_command(index: Index, checkpoint_ids: tuple[str, ...], task_name: str, metric_names: tuple[str, ...],
                  where: str | None, reference_task: str | None, device: str, batch_size: int | None,
                  executor_kind: str, address: str | None, workers: int | None, as_json: bool) -> None:
    """Score checkpoints on a task with metric plugins; results go to the task_scores table.

    \b
    Each checkpoint embeds the task's examples once (stored and reused). A score is recomputed
    only when the task, the checkpoint's sha, the reference task or the metric's version changed.
    Metrics that need a classification head (leep, nce) skip checkpoints without one.

    \b
    Examples:
      hubindex score --task digits --where "library_name = 'timm'"
      hubindex score --task news --metric logme --metric knn
      hubindex sql "SELECT checkpoint_id, value FROM task_scores WHERE task = 'news' AND metric = 'logme' ORDER BY value DESC"
    """
    from hubindex.executors import make_executor
    from hubindex.scoring import run_score, score_table

    with make_executor(executor_kind, address, workers) as executor:
        summary = run_score(index, task_name, metric_names, where, checkpoint_ids, reference_task, device,
                            batch_size, executor=executor)
    with index.open_catalog(read_only=True) as catalog:
        header, rows = score_table(catalog, task_name, summary.metrics, summary.checkpoint_ids)
    if as_json:
        click.echo(json.dumps([dict(zip(header, row)) for row in rows], indent=2))
    else:
        click.echo(summary.line(), err=True)
        for note in summary.notes:
            click.echo(f"  not applicable: {note}", err=True)
        print_failures(summary.failures)
        click.echo(format_rows(header, [[_rounded(v) for v in row] for row in rows], "table"), nl=False)


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


@cli.command("metric")
@click.argument("name")
@click.option("--features", type=click.Path(path_type=Path), required=True, metavar="F.npy",
              help="Features, one row per example (n x d).")
@click.option("--labels", type=click.Path(path_type=Path), required=True, metavar="y.npy",
              help="Class labels (n,), integers or strings.")
@click.option("--probs", type=click.Path(path_type=Path), metavar="P.npy",
              help="The checkpoint's softmax over its source classes (n x Z) for leep/nce; "
                   "for nce a 1-D array of source class indices also works.")
@click.option("--reference-features", type=click.Path(path_type=Path), metavar="R.npy",
              help="Reference task features (task-relatedness).")
@click.option("--reference-labels", type=click.Path(path_type=Path), metavar="yR.npy",
              help="Reference task labels (task-relatedness).")
@click.option("--validation-fraction", type=FRACTION, default=0.2, show_default=True,
              help="Held-out share of each class, for metrics that evaluate on held-out rows (linear, knn).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the split and of randomised metrics.")
@click.option("--json", "as_json", is_flag=True, help='Print {"metric", "version", "value", "seconds"}.')
def metric_command(name: str, features: Path, labels: Path, probs: Path | None, reference_features: Path | None,
                   reference_labels: Path | None, validation_fraction: float, seed: int, as_json: bool) -> None:
    """Compute one metric on given arrays (array mode, no catalog).

    \b
    Examples:
      hubindex metric logme --features F.npy --labels y.npy
      hubindex metric leep --features F.npy --labels y.npy --probs P.npy --json
    """
    from hubindex.scoring import metric_classes, score_arrays
    from hubindex.tasks import load_npy

    metric_classes([name])  # an unknown name fails before any file is read
    if (reference_features is None) != (reference_labels is None):
        raise UsageError("give --reference-features and --reference-labels together")
    reference = None
    if reference_features is not None:
        reference = (load_npy(reference_features, "--reference-features"),
                     load_npy(reference_labels, "--reference-labels"))
    result = score_arrays(
        name, load_npy(features, "--features"), load_npy(labels, "--labels"),
        load_npy(probs, "--probs") if probs is not None else None, reference, validation_fraction, seed,
    )
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        click.echo(f"{result.metric} (v{result.version}): {result.value:.6g}  [{result.seconds:.3f} s]")


# ------------------------------------------------------------------------------------ search


def _print_picks(picks: list[Any], with_mi: bool = False) -> None:
    header = ["rank", "checkpoint_id", "value", *(["mi_nats"] if with_mi else []), "reason"]
    rows = [[rank, p.checkpoint_id, _rounded(p.value), *([_rounded(p.mi_nats)] if with_mi else []), p.reason]
            for rank, p in enumerate(picks, 1)]
    click.echo(format_rows(header, rows, "table"), nl=False)


@cli.group("select")
def select_group() -> None:
    """Pick checkpoints that cover the task space before any task is known."""


@select_group.command("mmi")
@click.option("--budget", "-k", type=click.IntRange(1, None), required=True, help="How many checkpoints (K).")
@click.option("--corpus", metavar="NAME", help="Probed corpus whose kappa to use [default: the only one].")
@click.option("--kappa", "kappa_file", type=click.Path(path_type=Path), metavar="FILE.npy",
              help="A kappa matrix instead of the catalog; picks are row indices and nothing is stored.")
@click.option("--where", metavar="SQL-CONDITION", help="Restrict the pool to checkpoints matching this condition.")
@click.option("--json", "as_json", is_flag=True, help='Print {"selected": [...], "mi_nats": [...]}.')
@click.pass_obj
def select_mmi_command(index: Index, budget: int, corpus: str | None, kappa_file: Path | None, where: str | None,
                       as_json: bool) -> None:
    """Greedy maximum mutual information over kappa (Huang et al. 2021, Algorithm 1).

    \b
    Picks K checkpoints whose features cover the task space: each pick maximises
    1/2 ln(var(i | S) / var(i | rest)) under the Gaussian process with covariance kappa.
    mi_nats is the cumulative mutual information (sum of the gains) after each pick, in nats.
    Selections are nested: the first K of a larger budget are the selection for K. Duplicate
    checkpoints make kappa singular; a tiny jitter is then added to its diagonal (reported).

    \b
    Examples:
      hubindex select mmi --budget 5 --corpus bbc-news
      hubindex select mmi --budget 3 --where "library_name = 'timm'" --json
      hubindex select mmi --budget 10 --kappa kappa.npy --json
    """
    if kappa_file is not None:
        if corpus is not None or where is not None:
            raise UsageError("--kappa FILE.npy takes the matrix as it is: drop --corpus and --where")
        from hubindex.selection import choose_mmi_path, lowrank_factor_from_kappa, mmi_select, mmi_select_lowrank
        from hubindex.tasks import load_npy

        matrix = load_npy(kappa_file, "--kappa")
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.dtype.kind not in "fiu":
            raise UsageError(f"--kappa {kappa_file}: expected a square numeric matrix, got {matrix.dtype} {matrix.shape}")
        if budget > matrix.shape[0]:
            raise UsageError(f"--budget {budget} is more than the {matrix.shape[0]} rows of --kappa {kappa_file}")
        try:
            # The loaded matrix is this command's own: exact MMI works in it, with no second n x n copy.
            if choose_mmi_path(matrix.shape[0], budget, in_place=matrix.dtype.str.endswith("f8")) == "exact":
                selection = mmi_select(matrix, budget)
            else:
                click.echo(f"note: {matrix.shape[0]:,} rows are too many for exact MMI here; it runs on a "
                           "low-rank-plus-diagonal approximation of kappa", err=True)
                selection = mmi_select_lowrank(*lowrank_factor_from_kappa(matrix), budget)
        except ValueError as exc:
            raise UsageError(f"--kappa {kappa_file}: {exc}") from None
        if as_json:
            click.echo(json.dumps({"selected": selection.indices, "mi_nats": selection.mi_nats}))
            return
        if selection.jitter:
            click.echo(f"kappa is singular: added {selection.jitter:.3g} to its diagonal", err=True)
        rows = [[rank, i, round(g, 4), round(mi, 4)]
                for rank, (i, g, mi) in enumerate(zip(selection.indices, selection.gains, selection.mi_nats), 1)]
        click.echo(format_rows(["rank", "row", "gain_nats", "mi_nats"], rows, "table"), nl=False)
        return
    from hubindex.search import run_search

    result = run_search(index, "mmi", budget, where=where, corpus=corpus)
    if as_json:
        click.echo(json.dumps({"selected": [p.checkpoint_id for p in result.picks],
                               "mi_nats": [p.mi_nats for p in result.picks]}))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"selection {result.selection_id}: mmi on {result.corpus}, {len(result.picks)} of "
               f"{result.pool_size} checkpoints", err=True)
    _print_picks(result.picks, with_mi=True)


@cli.command("search")
@click.option("--task", metavar="NAME", help="The user's task (for aware and hybrid).")
@click.option("--budget", "-b", type=click.IntRange(1, None), required=True,
              help="How many checkpoints you will fine-tune (B).")
@click.option("--strategy", default="hybrid", show_default=True, metavar="NAME",
              help="agnostic, aware, hybrid, random, or a plugin's strategy.")
@click.option("--metric", metavar="NAME", help="Metric whose scores rank the task-aware part [default: linear].")
@click.option("--where", metavar="SQL-CONDITION",
              help="Restrict the pool in SQL, e.g. \"license = 'apache-2.0' AND params_total < 50e6\".")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help="Seed of random.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def search_command(index: Index, task: str | None, budget: int, strategy: str, metric: str | None,
                   where: str | None, seed: int, as_json: bool) -> None:
    """Which B checkpoints to fine-tune for a task (Renggli et al.).

    \b
    agnostic  highest ImageNet top-1, then largest upstream data, then largest model
    aware     best scores of --metric on --task (run `hubindex score` first)
    hybrid    the top-1 agnostic checkpoint + the top-(B-1) aware ones
    random    a seeded random choice (the baseline)

    \b
    Examples:
      hubindex search --task digits --budget 3 --strategy hybrid --metric logme
      hubindex search --budget 5 --strategy agnostic --where "license = 'apache-2.0'"
    """
    from hubindex.search import query_class, run_search
    from hubindex.types import USES_KAPPA

    if USES_KAPPA in query_class(strategy).uses:
        raise UsageError(f"strategy {strategy!r} works on kappa, not a task: use `hubindex select {strategy}`")
    result = run_search(index, strategy, budget, task=task, metric=metric, where=where, seed=seed)
    if as_json:
        click.echo(json.dumps(result.as_json()))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    about = f" for task {result.task!r}" if result.task else ""
    about += f" by {result.metric}" if result.metric else ""
    click.echo(f"selection {result.selection_id}: {strategy}{about}, {len(result.picks)} of {result.pool_size} "
               "checkpoints", err=True)
    _print_picks(result.picks)


@cli.command("evaluate")
@click.option("--scores", "scores_file", type=click.Path(path_type=Path), required=True, metavar="S.csv",
              help="Columns task,checkpoint_id,metric,value.")
@click.option("--truth", "truth_file", type=click.Path(path_type=Path), required=True, metavar="T.csv",
              help="Columns task,checkpoint_id,accuracy (fractions in [0,1] or percent).")
@click.option("--budget", "-b", type=click.IntRange(1, None), default=1, show_default=True,
              help="B for regret: the best accuracy among the top-B checkpoints by score.")
@click.option("--json", "as_json", is_flag=True, help='Print {"per_task": [...], "mean": [...]}.')
def evaluate_command(scores_file: Path, truth_file: Path, budget: int, as_json: bool) -> None:
    """How well each metric's scores rank checkpoints against fine-tuned accuracies.

    \b
    Per task and metric, and averaged over tasks: recall@1, recall@3 (the best checkpoint is in
    the top k), rel@1, rel@3 (best accuracy in the top k / best overall), pearson, kendall,
    weighted_tau (scipy's weightedtau of accuracy vs score), regret and relative_regret at the
    budget. Metrics whose plugin says lower is better (task-relatedness) are ranked ascending.

    \b
    Example (scores exported from the catalog):
      hubindex sql "SELECT task, checkpoint_id, metric, value FROM task_scores" --format csv > S.csv
      hubindex evaluate --scores S.csv --truth T.csv --budget 3
    """
    from hubindex.evaluation import evaluate, load_scores, load_truth

    report = evaluate(load_scores(scores_file), load_truth(truth_file), budget)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        click.echo(report.table())


# ------------------------------------------------------------------------------------ nightly


@cli.command("nightly")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="TOML configuration (see examples/nightly/nightly.toml) [default: keep current what the "
                   "index holds: repeat its crawls, probe its corpora, score its tasks, local weights only].")
@click.option("--executor", "executor_kind", metavar="local|ray", help="Where probing and scoring compute runs.")
@click.option("--address", metavar="ADDR", help="Ray cluster address for --executor ray (e.g. ray://head:10001).")
@click.option("--workers", type=click.IntRange(1, None), help="Parallel workers of the executor.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where models run [default: auto].")
@click.option("--max-checkpoints", type=click.IntRange(1, None),
              help="At most N checkpoints probed, and N embedded for scoring, this run; the rest wait.")
@click.option("--check", is_flag=True, help="Validate the configuration and print the settings as JSON; run nothing.")
@click.pass_obj
def nightly_command(index: Index, config_file: Path | None, executor_kind: str | None, address: str | None,
                    workers: int | None, device: str | None, max_checkpoints: int | None, check: bool) -> None:
    """Keep the index current: crawl -> probe -> kappa -> score -> report, safe to run every night.

    \b
    Incremental: a run after a night without changes downloads nothing and runs no model.
    One run at a time (a lock that a killed run never leaves behind); a killed run's work is
    completed by the next. Failing checkpoints are recorded and skipped. `hubindex sql` reads a
    snapshot of the catalog while a run writes it. The report goes to the nightly_runs and
    nightly_stages tables and to <index>/reports/nightly-<run_id>.txt.

    \b
    Exit codes: 0 completed; 1 a stage failed, or a full disk or a refused write stopped the run;
    2 bad configuration or arguments; 3 another nightly run holds the lock (or another process
    held the catalog too long); 130 interrupted (SIGINT, SIGTERM).

    \b
    Examples:
      hubindex nightly --config examples/nightly/nightly.toml
      hubindex nightly --config nightly.toml --executor ray --address ray://head:10001
    """
    from hubindex.nightly import default_config, load_config, run_nightly

    config = load_config(config_file) if config_file is not None else None
    overrides = dict(executor=executor_kind, address=address, workers=workers, device=device,
                     max_checkpoints=max_checkpoints)
    if check:
        chosen = (config or default_config(index)).with_overrides(**overrides)
        click.echo(json.dumps(chosen.as_json(), indent=2))
        return
    report = run_nightly(index, config, log=lambda line: click.echo(f"nightly: {line}", err=True),
                         overrides=overrides)
    click.echo(report.summary, nl=False)
    if report.status != "completed":
        raise HubindexError(f"nightly run {report.run_id} {report.status}: {report.error}; see {report.report_path}")


# ------------------------------------------------------------------------------------ entry


def _one_line_warning(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> str:
    return f"hubindex: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every expected failure is one line on stderr and a non-zero exit code."""
    warnings.formatwarning = _one_line_warning  # a plugin's warning is one line too, not a source dump
    try:
        cli.main(args=argv, prog_name="hubindex", standalone_mode=False)
    except HubindexError as exc:
        click.echo(f"hubindex: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())  # `hubindex` or `hubindex crawl` alone: show the help
        return 0
    except click.exceptions.Abort:
        click.echo("hubindex: aborted", err=True)
        return 130
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"hubindex: error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except duckdb.Error as exc:  # a damaged catalog file: one line and the command that says more
        first = " ".join(str(exc).split())[:300]
        click.echo(f"hubindex: error: the catalog could not be read ({first}); `hubindex check` says what is "
                   "damaged and `hubindex check --repair` mends what can be recomputed", err=True)
        return 1
    return 0


pm.hook.register_commands(cli=cli)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
