"""Commands over the task space: kappa, neighbors, plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hubindex.cli.output import format_rows
from hubindex.cli.root import cli
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index

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


