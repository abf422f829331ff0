"""Commands over the task space: corpora, kappa, neighbors, plot."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hubindex.cli.common import reading_catalog
from hubindex.cli.root import cli
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.output import emit_rows, output_format

if TYPE_CHECKING:
    from hubindex.catalog import Catalog
    from hubindex.corpus_versions import CorpusRef

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


# Columns every long kappa row carries in catalog mode, after the pair's own.
CORPUS_COLUMNS = ["corpus", "corpus_hash"]
CORPUS_HELP = ("Probed corpus version: NAME, NAME@ITEMS, NAME@HASH or a hash prefix (`hubindex corpora` lists "
               "them) [default: the only one].")


def _say_corpus(ref: CorpusRef) -> None:
    """Which corpus version a table is on, on stderr (exports carry it in their rows)."""
    click.echo(f"corpus {ref.describe()}", err=True)


# ------------------------------------------------------------------------------------ corpora


@cli.command("corpora")
@output_format
@click.pass_obj
def corpora_command(index: Index, fmt: str) -> None:
    """The probed corpus versions: how to name each (SPEC) for --corpus, its items, hash and checkpoints.

    \b
    A corpus probed at two sizes (e.g. --max-items 1500 and its default) has two versions; a
    command given only the name then asks which one.
    """
    from hubindex.corpus_versions import SHOWN_HASH, corpus_versions

    with reading_catalog(index) as catalog:
        versions = corpus_versions(catalog)
    columns = ["spec", "corpus", "items", "corpus_hash", "checkpoints", "first_probed", "last_probed"]
    emit_rows(columns, [(v.spec, v.name, v.n_items, v.content_hash[:SHOWN_HASH] if fmt == "table" else v.content_hash,
                         v.checkpoints, v.first_probed, v.last_probed) for v in versions], fmt)


# ------------------------------------------------------------------------------------ kappa


@cli.command("kappa")
@click.argument("files", nargs=-1, metavar="[FILES]...")
@click.option("--arrays", "array_mode", is_flag=True,
              help="Compute kappa for feature matrices given as .npy FILES (rows aligned) instead of the catalog.")
@click.option("--corpus", metavar="SPEC", help=CORPUS_HELP)
@click.option("--centered/--uncentered", default=True, show_default=True,
              help="Mean-centre features first (linear CKA, as the paper) or not.")
@click.option("--dense-max", type=click.IntRange(2), default=None, metavar="N",
              help="Above N probed checkpoints, a sparse kappa graph instead of all pairs [default: 10000].")
@click.option("--graph-neighbors", type=click.IntRange(1, 10_000), default=None, metavar="K",
              help="Sparse graph: pairs kept per checkpoint, its K highest exact kappas [default: 32].")
@click.option("--graph-candidates", type=click.IntRange(1, 100_000), default=None, metavar="C",
              help="Sparse graph: fingerprint candidates re-ranked by exact kappa per checkpoint [default: 128].")
@output_format
@click.pass_obj
def kappa_command(index: Index, files: tuple[str, ...], array_mode: bool, corpus: str | None,
                  centered: bool, dense_max: int | None, graph_neighbors: int | None,
                  graph_candidates: int | None, fmt: str) -> None:
    """Task-space covariance kappa (kernel alignment) between checkpoints.

    \b
    Catalog mode: computes the pairs the catalog lacks for every checkpoint probed on a corpus,
    stores them in the `kappa` table and refreshes the task fingerprints used by `neighbors`.
    Above --dense-max checkpoints, each checkpoint gets exact kappa to its --graph-neighbors
    nearest of --graph-candidates found by fingerprint search (a sparse graph, same table).
    With nothing to compute, it only reads (a read-only index works).
    Array mode, for researchers:  hubindex kappa --arrays A.npy B.npy C.npy [--format json]

    \b
    The table is the matrix (up to 12 checkpoints); csv, json and ndjson give one row per pair
    (checkpoint_a < checkpoint_b): kappa, the items it was computed on, and the corpus version.
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
        _array_kappa(files, centered, fmt)
        return

    from hubindex.corpus_versions import resolve_corpus
    from hubindex.fingerprints import fingerprints_current, update_fingerprints
    from hubindex.relate import kappa_up_to_date, update_kappa

    if not index.catalog_path.exists():
        raise HubindexError("no checkpoint has been probed yet; run `hubindex probe` first")
    dense_max = dense_max or DENSE_MAX
    # A run with nothing to compute only reads: it works on a read-only index, and beside a writer.
    with reading_catalog(index) as catalog:
        ref = resolve_corpus(catalog, corpus)
        update = kappa_up_to_date(catalog, ref, centered, dense_max, graph)
        kept = fingerprints_current(catalog, index.root, ref) if update is not None else None
        if update is not None and kept is not None:
            _show_kappa(catalog, ref, update.line() + f"; fingerprints: 0 new, {kept} kept", update.checkpoints,
                        centered, fmt)
            return
    from tqdm.auto import tqdm

    with index.open_catalog() as catalog:
        with tqdm(desc="kappa pairs", unit=" pair", disable=None) as bar:
            update = update_kappa(catalog, index.root, ref, centered, progress=bar.update, dense_max=dense_max,
                                  graph=graph)
        added, kept = update_fingerprints(catalog, index.root, ref)
        _show_kappa(catalog, ref, update.line() + f"; fingerprints: {added} new, {kept} kept", update.checkpoints,
                    centered, fmt)


def _show_kappa(catalog: Catalog, ref: CorpusRef, summary: str, checkpoints: int, centered: bool, fmt: str) -> None:
    """The run's summary and the matrix (a table), or every stored pair of the corpus version (exports)."""
    from hubindex.relate import current_pairs, kappa_matrix_from_catalog

    if fmt != "table":
        click.echo(summary, err=True)
        emit_rows(["checkpoint_a", "checkpoint_b", "kappa", "n_items", *CORPUS_COLUMNS],
                  ((a, b, value, items, ref.name, ref.content_hash)
                   for a, b, value, items in current_pairs(catalog, ref, centered)), fmt)
        return
    _say_corpus(ref)
    click.echo(summary)
    if checkpoints <= 12:  # a large matrix is for SQL or an export, not the terminal
        from hubindex.plots import short_name

        ids, values, _ = kappa_matrix_from_catalog(catalog, ref, centered)
        click.echo(_matrix_text([short_name(i.rsplit("/", 1)[-1], 28) for i in ids], values), nl=False)


def _array_kappa(files: tuple[str, ...], centered: bool, fmt: str) -> None:
    from hubindex.kappa import kappa_matrix

    try:
        result = kappa_matrix(_load_feature_arrays(files), centered=centered)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if fmt == "table":
        click.echo(_matrix_text([Path(f).stem for f in files], result.values), nl=False)
        return
    n = len(files)
    emit_rows(["checkpoint_a", "checkpoint_b", "kappa", "n_items"],
              [(files[i], files[j], float(result.values[i, j]), int(result.n_items[i, j]))
               for i in range(n) for j in range(i + 1, n)], fmt)


# ------------------------------------------------------------------------------------ neighbors


@cli.command("neighbors")
@click.argument("checkpoint_id")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="How many neighbours.")
@click.option("--corpus", metavar="SPEC", help=CORPUS_HELP)
@click.option("--candidates", type=click.IntRange(1, 100_000), default=None, metavar="N",
              help="Fingerprint candidates re-ranked by exact kappa [default: max(10 k, 100)].")
@output_format
@click.pass_obj
def neighbors_command(index: Index, checkpoint_id: str, k: int, corpus: str | None, candidates: int | None,
                      fmt: str) -> None:
    """Checkpoints with the highest kappa to CHECKPOINT_ID: fingerprint search, then exact kappa.

    The --candidates checkpoints with the highest fingerprint estimate are re-ranked by exact
    kappa from their stored features; a neighbour is missed only if its estimate is not among them.
    """
    from hubindex.corpus_versions import resolve_corpus
    from hubindex.fingerprints import nearest_checkpoints

    with reading_catalog(index) as catalog:
        ref = resolve_corpus(catalog, corpus)
        found = nearest_checkpoints(catalog, index.root, ref, checkpoint_id, k, candidates=candidates)
    columns = ["checkpoint_id", "kappa", "kappa_estimate"]
    if fmt == "table":
        _say_corpus(ref)
        emit_rows(columns, [(c, f"{v:.4f}", f"{e:.4f}") for c, v, e in found], fmt)
    else:
        emit_rows([*columns, *CORPUS_COLUMNS], [(c, v, e, ref.name, ref.content_hash) for c, v, e in found], fmt)


# ------------------------------------------------------------------------------------ plot


@cli.group("plot")
def plot_group() -> None:
    """Draw figures from the catalog."""


@plot_group.command("kappa")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--corpus", metavar="SPEC", help=CORPUS_HELP)
@click.option("--centered/--uncentered", default=True, show_default=True)
@click.pass_obj
def plot_kappa_command(index: Index, out: Path, corpus: str | None, centered: bool) -> None:
    """Heatmap of kappa ordered by a ward-linkage dendrogram, labelled with checkpoint names."""
    from hubindex.corpus_versions import resolve_corpus
    from hubindex.plots import plot_kappa
    from hubindex.relate import kappa_matrix_from_catalog

    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist; create it first")
    with reading_catalog(index) as catalog:
        ref = resolve_corpus(catalog, corpus)
        ids, values, _ = kappa_matrix_from_catalog(catalog, ref, centered)
    if len(ids) < 2:
        raise HubindexError(f"kappa on {ref.spec} covers {len(ids)} checkpoint(s); run `hubindex kappa --corpus "
                            f"{ref.spec}` after probing more")
    _say_corpus(ref)
    plot_kappa(ids, values, out, title=f"kappa on {ref.describe()}")
    click.echo(f"wrote {out}")
