"""Commands that choose checkpoints: select mmi, search, evaluate."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hubindex.cli.output import format_rows, rounded
from hubindex.cli.root import cli
from hubindex.errors import UsageError
from hubindex.index import Index

# ------------------------------------------------------------------------------------ search


def _print_picks(picks: list[Any], with_mi: bool = False) -> None:
    header = ["rank", "checkpoint_id", "value", *(["mi_nats"] if with_mi else []), "reason"]
    rows = [[rank, p.checkpoint_id, rounded(p.value), *([rounded(p.mi_nats)] if with_mi else []), p.reason]
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
        from hubindex.selection import (
            choose_mmi_path,
            lowrank_factor_from_kappa,
            mmi_select,
            mmi_select_lowrank,
        )
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


