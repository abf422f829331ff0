"""Commands that choose checkpoints: select mmi, search, evaluate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubindex.cli.common import reading_catalog
from hubindex.cli.root import cli
from hubindex.errors import UsageError
from hubindex.index import Index
from hubindex.output import emit_json, emit_rows, output_format, rounded

# ------------------------------------------------------------------------------------ search


def _nats(value: float | None, fmt: str) -> Any:
    """A gain or MI for output: text with enough digits in a table; a plain number (never -0.0) in exports."""
    from hubindex_plugins.queries import nats_text

    if value is None:
        return None
    return nats_text(value) if fmt == "table" else value + 0.0


def _budget(budget: int | None, budget_k: int | None) -> int:
    """--budget/-b, or the deprecated -k of `select mmi`."""
    if budget_k is not None:
        if budget is not None and budget != budget_k:
            raise UsageError(f"--budget {budget} and -k {budget_k} disagree; give --budget alone")
        click.echo("hubindex: note: -k for the budget is deprecated; use --budget/-b", err=True)
        return budget_k
    if budget is None:
        raise UsageError("give --budget N (how many checkpoints)")
    return budget


def _report_search(result: Any, about: str) -> None:
    """The notes, the tie cut by the budget, and where the answer was kept, on stderr."""
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    tie = result.tie_note()
    if tie:
        click.echo(f"note: {tie}", err=True)
    stored = f"selection {result.selection_id}" if result.selection_id is not None else "selection (not stored)"
    among = (f"{result.candidates} checkpoints with kappa (pool: {result.pool_size})"
             if result.candidates is not None and result.candidates < result.pool_size
             else f"{result.pool_size} checkpoints")
    click.echo(f"{stored}: {about}, {len(result.picks)} of {among}", err=True)
    if result.not_stored and result.not_stored != "--no-save":
        click.echo(f"note: the answer was not stored in the selections table: {result.not_stored}", err=True)


def _save_option(command: Any) -> Any:
    return click.option("--save/--no-save", default=True, show_default=True,
                        help="Store the answer in the selections table (skipped, with a note, when the index "
                             "is read-only or another process is writing it).")(command)


@cli.group("select")
def select_group() -> None:
    """Pick checkpoints that cover the task space before any task is known."""


@select_group.command("mmi")
@click.option("--budget", "-b", type=click.IntRange(1, None), default=None, help="How many checkpoints (K).  [required]")
@click.option("-k", "budget_k", type=click.IntRange(1, None), default=None, hidden=True,
              help="Deprecated spelling of --budget.")
@click.option("--corpus", metavar="NAME", help="Probed corpus whose kappa to use [default: the only one].")
@click.option("--kappa", "kappa_file", type=click.Path(path_type=Path), metavar="FILE.npy",
              help="A kappa matrix instead of the catalog; picks are row indices and nothing is stored.")
@click.option("--where", metavar="SQL-CONDITION", help="Restrict the pool to checkpoints matching this condition.")
@_save_option
@output_format
@click.pass_obj
def select_mmi_command(index: Index, budget: int | None, budget_k: int | None, corpus: str | None,
                       kappa_file: Path | None, where: str | None, save: bool, fmt: str) -> None:
    """Greedy maximum mutual information over kappa (Huang et al. 2021, Algorithm 1).

    \b
    Picks K checkpoints whose features cover the task space: each pick maximises
    gain = 1/2 ln(var(i | S) / var(i | rest)) under the Gaussian process with covariance kappa,
    S the picks so far and rest the checkpoints neither picked nor i. mi_nats is the cumulative
    mutual information I(S; rest) (the sum of the gains) after each pick, in nats.
    Selections are nested: the first K of a larger budget are the selection for K. Duplicate
    checkpoints make kappa singular; a tiny jitter is then added to its diagonal (reported).

    \b
    A gain can be negative: I(S; rest) is not monotone in S. When the picks so far predict i
    better than the rest does (var(i | S) < var(i | rest)), moving i into S takes away more of
    what S was explaining than it adds, and the total falls. The greedy still takes the largest
    gain, so a negative gain means every remaining pick lowers the total; a gain near 0 is
    typically a copy of a checkpoint already picked. Tiny gains print with 3 significant digits.

    \b
    Examples:
      hubindex select mmi --budget 5 --corpus bbc-news
      hubindex select mmi --budget 3 --where "library_name = 'timm'" --format json
      hubindex select mmi --budget 10 --kappa kappa.npy --format csv
    """
    budget = _budget(budget, budget_k)
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
        if selection.jitter:
            click.echo(f"kappa is singular: added {selection.jitter:.3g} to its diagonal", err=True)
        if fmt == "json":
            emit_json({"selected": selection.indices, "mi_nats": selection.mi_nats,
                       "gain_nats": [g + 0.0 for g in selection.gains], "jitter": selection.jitter})
            return
        rows = [[rank, i, _nats(g, fmt), _nats(mi, fmt)]
                for rank, (i, g, mi) in enumerate(zip(selection.indices, selection.gains, selection.mi_nats), 1)]
        emit_rows(["rank", "row", "gain_nats", "mi_nats"], rows, fmt)
        return
    from hubindex.search import run_search

    result = run_search(index, "mmi", budget, where=where, corpus=corpus, save=save,
                        reading=lambda: reading_catalog(index))
    _report_search(result, f"mmi on {result.corpus_line() or result.corpus}")
    if fmt == "json":
        emit_json({**result.as_json(), "mi_nats": [p.mi_nats for p in result.picks],
                   "gain_nats": [p.value + 0.0 for p in result.picks]})
        return
    emit_rows(["rank", "checkpoint_id", "gain_nats", "mi_nats"],
              [[rank, p.checkpoint_id, _nats(p.value, fmt), _nats(p.mi_nats, fmt)]
               for rank, p in enumerate(result.picks, 1)], fmt)


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
@_save_option
@output_format
@click.pass_obj
def search_command(index: Index, task: str | None, budget: int, strategy: str, metric: str | None,
                   where: str | None, seed: int, save: bool, fmt: str) -> None:
    """Which B checkpoints to fine-tune for a task (Renggli et al.).

    \b
    agnostic  highest ImageNet top-1, then largest upstream data, then largest model
    aware     best scores of --metric on --task (run `hubindex score` first)
    hybrid    the top-1 agnostic checkpoint + the top-(B-1) aware ones
    random    a seeded random choice (the baseline)

    \b
    Checkpoints with equal scores go in checkpoint_id order; when the budget cuts through such a
    tie, a note on stderr names those left out (and `ties` in JSON lists them).

    \b
    Examples:
      hubindex search --task digits --budget 3 --strategy hybrid --metric logme
      hubindex search --budget 5 --strategy agnostic --where "license = 'apache-2.0'" --format json
    """
    from hubindex.search import query_class, run_search
    from hubindex.types import USES_KAPPA

    if USES_KAPPA in query_class(strategy).uses:
        raise UsageError(f"strategy {strategy!r} works on kappa, not a task: use `hubindex select {strategy}`")
    result = run_search(index, strategy, budget, task=task, metric=metric, where=where, seed=seed, save=save,
                        reading=lambda: reading_catalog(index))
    about = f" for task {result.task!r}" if result.task else ""
    about += f" by {result.metric}" if result.metric else ""
    _report_search(result, f"{strategy}{about}")
    if fmt == "json":
        emit_json(result.as_json())
        return
    emit_rows(["rank", "checkpoint_id", "value", "reason"],
              [[rank, p.checkpoint_id, rounded(p.value) if fmt == "table" else p.value, p.reason]
               for rank, p in enumerate(result.picks, 1)], fmt)


@cli.command("evaluate")
@click.option("--scores", "scores_file", type=click.Path(path_type=Path), metavar="S.csv",
              help="Columns task,checkpoint_id,metric,value [default: the index's task_scores].")
@click.option("--truth", "truth_file", type=click.Path(path_type=Path), required=True, metavar="T.csv",
              help="Columns task,checkpoint_id,accuracy (fractions in [0,1] or percent); optional setup and "
                   "base_task columns describe setups.")
@click.option("--metric", "metric_names", multiple=True, metavar="NAME", help="Only this metric (repeatable).")
@click.option("--task", "task_names", multiple=True, metavar="NAME",
              help="Only this task and the tasks whose base task it is (repeatable).")
@click.option("--budget", "-b", type=click.IntRange(1, None), default=1, show_default=True,
              help="B for regret: the best accuracy among the top-B checkpoints by score.")
@output_format
@click.pass_obj
def evaluate_command(index: Index, scores_file: Path | None, truth_file: Path, metric_names: tuple[str, ...],
                     task_names: tuple[str, ...], budget: int, fmt: str) -> None:
    """How well each metric's scores rank checkpoints against fine-tuned accuracies.

    \b
    Per task and metric, and averaged over tasks: recall@1, recall@3 (the best checkpoint is in
    the top k), rel@1, rel@3 (best accuracy in the top k / best overall), pearson, kendall,
    weighted_tau (scipy's weightedtau of accuracy vs score), regret and relative_regret at the
    budget. Metrics whose plugin says lower is better (task-relatedness) are ranked ascending.

    \b
    The scores are the index's task_scores (read-only; the installed metrics' current versions,
    scored tasks without ground truth left out with a note), or --scores S.csv.

    \b
    Setups: a `setup` column in T.csv makes each (task, setup) one setup, its rows the pool (a
    subset of the checkpoints); a `base_task` column names the task a derived task (examples
    subsampled, another seed) is a setup of. The report then gives every setup's measures and,
    per base task and over all setups, each measure's mean and for weighted_tau, recall@1 and
    relative_regret the standard deviation and 10th-90th percentiles across setups.

    \b
    A metric whose scores are constant over a task's checkpoints (equal up to float noise, as
    H-score's C - 1) ranks nothing there: its measures are undefined (null in JSON) and left out
    of its mean, with a note. `ties` counts checkpoints tied on the score across the budget
    (the regret then depends on the checkpoint_id tie-break; a note on stderr says so).
    --format csv|ndjson writes every list as rows, `scope` saying which ('task' or 'mean';
    with setups also 'setup').

    \b
    Examples:
      hubindex evaluate --truth T.csv --budget 3
      hubindex evaluate --truth T.csv --metric logme --metric leep --task digits --format json
      hubindex evaluate --scores S.csv --truth T.csv
    """
    from hubindex.evaluation import (
        catalog_scores,
        evaluate,
        has_setups,
        load_scores,
        load_truth_rows,
        select_scores,
        truth_by_task,
    )

    truth = load_truth_rows(truth_file)
    if scores_file is not None:
        scores, directions, notes = load_scores(scores_file), None, []
    else:
        with reading_catalog(index) as catalog:
            scores, directions, notes = catalog_scores(catalog)
        if not scores:
            raise UsageError(f"task_scores of {index.root} holds no scores; run `hubindex score --task NAME` first")
    scores, selected = select_scores(scores, truth, task_names, metric_names, whole_table=scores_file is None)
    if has_setups(truth):
        from hubindex.evaluation_setups import evaluate_setups

        report: Any = evaluate_setups(scores, truth, budget, directions)
    else:
        report = evaluate(scores, truth_by_task(truth), budget, directions)
    for note in [*notes, *selected, *report.tie_notes()]:
        click.echo(f"note: {note}", err=True)
    if fmt == "json":
        emit_json(report.as_json())
    elif fmt == "table":
        click.echo(report.table(), nl=False)
    else:
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        emit_rows(*report.export_rows(), fmt)
