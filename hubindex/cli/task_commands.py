"""Commands for user tasks and their scores: task add/list/remove, score, metric."""
from __future__ import annotations

from pathlib import Path

import click

from hubindex.cli.common import (
    FRACTION,
    executor_options,
    print_failures,
    reading_catalog,
)
from hubindex.cli.root import cli
from hubindex.errors import NothingDone, UsageError
from hubindex.index import Index
from hubindex.output import emit_json, emit_rows, output_format, rounded
from hubindex.task_targets import DEFAULT_LABEL_SEPARATOR
from hubindex.types import TARGET_CLASSIFICATION, TARGET_KINDS

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
@click.option("--label-col", metavar="COLUMN", help="Column of labels (--csv, --dataset).")
@click.option("--target", type=click.Choice(TARGET_KINDS), default=TARGET_CLASSIFICATION, show_default=True,
              help="What the labels are: one class per example, a set of classes per example (a list, or "
                   "classes joined by --label-sep; for --arrays a 0/1 matrix), or numbers to predict.")
@click.option("--label-sep", default=DEFAULT_LABEL_SEPARATOR, show_default=True, metavar="TEXT",
              help="What joins an example's classes in one CSV cell (--target multi-label).")
@click.option("--validation-fraction", type=FRACTION, default=0.2, show_default=True,
              help="Share held out for validation (of each class, for classification).")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the train/validation split (and of seeded metrics).")
@click.option("--replace", is_flag=True, help="Replace a task of the same name that holds other data.")
@click.pass_obj
def task_add_command(index: Index, name: str, images_dir: Path | None, csv_file: Path | None,
                     arrays: tuple[Path, Path] | None, dataset_dir: Path | None, text_col: str | None,
                     image_col: str | None, label_col: str | None, target: str, label_sep: str,
                     validation_fraction: float, seed: int, replace: bool) -> None:
    """Add a labeled task: check its examples and labels, split them (seeded; stratified by
    class for classification) and keep a copy in the index.

    \b
    Examples:
      hubindex task add flowers --images ~/data/flowers        # flowers/daisy/*.jpg, flowers/rose/*.jpg
      hubindex task add reviews --csv reviews.csv --text-col text --label-col stars
      hubindex task add digits --arrays X.npy y.npy
      hubindex task add news --dataset ./ag_news_train --text-col text --label-col label
      hubindex task add tags --csv posts.csv --text-col text --label-col tags --target multi-label
      hubindex task add ratings --csv reviews.csv --text-col text --label-col score --target regression
    """
    from hubindex import tasks

    given = [flag for flag, value in (("--images", images_dir), ("--csv", csv_file), ("--arrays", arrays),
                                      ("--dataset", dataset_dir)) if value is not None]
    if len(given) != 1:
        raise UsageError("give exactly one source of examples: --images DIR, --csv FILE, --arrays X.npy y.npy "
                         f"or --dataset DIR{' (got ' + ', '.join(given) + ')' if given else ''}")
    tasks.validate_task_name(name)
    if images_dir is not None:
        if target != TARGET_CLASSIFICATION:
            raise UsageError(f"--images reads one class per sub-folder; --target {target} needs --csv, --arrays "
                             "or --dataset")
        examples = tasks.read_image_folder(images_dir)
    elif csv_file is not None:
        examples = tasks.read_csv(csv_file, text_col, label_col, target)
    elif arrays is not None:
        examples = tasks.read_arrays(*arrays, target=target)
    else:
        examples = tasks.read_dataset(dataset_dir, text_col, image_col, label_col)
    added = tasks.add_task(index, name, examples, validation_fraction, seed, replace, target, label_sep)
    click.echo(added.line())


@task_group.command("list")
@output_format
@click.pass_obj
def task_list_command(index: Index, fmt: str) -> None:
    """List the tasks."""
    from hubindex.tasks import TASK_COLUMNS, describe_task, task_rows

    with reading_catalog(index) as catalog:
        rows = [describe_task(row) for row in task_rows(catalog)]
    if not rows and fmt == "table":
        click.echo("no tasks yet; add one with `hubindex task add`", err=True)
        return
    emit_rows(list(TASK_COLUMNS), [[row[c] for c in TASK_COLUMNS] for row in rows], fmt)


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
@click.option("--label-encoder", "label_encoders", multiple=True, metavar="CHECKPOINT",
              help="A text checkpoint of the catalog that embeds the class names, for metrics that need label "
                   "embeddings (emms); repeatable.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where models run; auto = cuda when available.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Examples per forward pass [default: the probe's, 32].")
@executor_options
@output_format
@click.pass_obj
def score_command(index: Index, checkpoint_ids: tuple[str, ...], task_name: str, metric_names: tuple[str, ...],
                  where: str | None, reference_task: str | None, label_encoders: tuple[str, ...], device: str,
                  batch_size: int | None, executor_kind: str, address: str | None, workers: int | None,
                  fmt: str) -> None:
    """Score checkpoints on a task with metric plugins; results go to the task_scores table.

    \b
    Each checkpoint embeds the task's examples once (stored and reused). A score is recomputed
    only when the task, the checkpoint's sha, the reference task or the metric's version changed.
    Metrics that need a classification head (leep, nce) skip checkpoints without one; a metric
    skips tasks whose target (classification, multi-label, regression) it does not define.

    \b
    Examples:
      hubindex score --task digits --where "library_name = 'timm'"
      hubindex score --task news --metric logme --metric knn
      hubindex score --task news --metric emms --label-encoder sentence-transformers/all-MiniLM-L6-v2
      hubindex sql "SELECT checkpoint_id, value FROM task_scores WHERE task = 'news' AND metric = 'logme' ORDER BY value DESC"
    """
    from hubindex.executors import make_executor
    from hubindex.probing import nothing_selected
    from hubindex.scoring import run_score, score_table

    with make_executor(executor_kind, address, workers) as executor:
        summary = run_score(index, task_name, metric_names, where, checkpoint_ids, reference_task, device,
                            batch_size, executor=executor, label_encoders=label_encoders)
    with reading_catalog(index) as catalog:
        header, rows = score_table(catalog, task_name, summary.metrics, summary.checkpoint_ids)
    click.echo(summary.line(), err=True)
    for note in summary.notes:
        click.echo(f"  not applicable: {note}", err=True)
    print_failures(summary.failures)
    emit_rows(header, [[rounded(v) for v in row] for row in rows] if fmt == "table" else rows, fmt)
    if not summary.selected:
        raise nothing_selected(where if not checkpoint_ids else None)
    if not any(value is not None for row in rows for value in row[1:]):
        raise NothingDone(f"no score for task {task_name!r}: every checkpoint failed or no metric applies "
                          "(see the notes above and the failures table)")


@cli.command("metric")
@click.argument("name")
@click.option("--features", type=click.Path(path_type=Path), required=True, metavar="F.npy",
              help="Features, one row per example (n x d).")
@click.option("--labels", type=click.Path(path_type=Path), required=True, metavar="y.npy",
              help="Class labels (n,), integers or strings; for --target multi-label a 0/1 matrix (n, C), for "
                   "--target regression numbers (n,) or (n, t).")
@click.option("--target", type=click.Choice(TARGET_KINDS), default=TARGET_CLASSIFICATION, show_default=True,
              help="What the labels are.")
@click.option("--label-embeddings", multiple=True, type=click.Path(path_type=Path), metavar="E.npy",
              help="Embeddings of the class names (C x e), one file per label encoder, for metrics that need "
                   "them (emms); rows in the order of the sorted class labels. Repeatable.")
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
@output_format
def metric_command(name: str, features: Path, labels: Path, target: str, label_embeddings: tuple[Path, ...],
                   probs: Path | None, reference_features: Path | None, reference_labels: Path | None,
                   validation_fraction: float, seed: int, fmt: str) -> None:
    """Compute one metric on given arrays (array mode, no catalog).

    \b
    Examples:
      hubindex metric logme --features F.npy --labels y.npy
      hubindex metric leep --features F.npy --labels y.npy --probs P.npy --format json
      hubindex metric logme --features F.npy --labels values.npy --target regression
    """
    from hubindex.array_scoring import score_arrays
    from hubindex.scoring import metric_classes
    from hubindex.tasks import load_feature_matrix, load_npy

    metric_classes([name])  # an unknown name fails before any file is read
    if (reference_features is None) != (reference_labels is None):
        raise UsageError("give --reference-features and --reference-labels together")
    reference = None
    if reference_features is not None:
        reference = (load_npy(reference_features, "--reference-features"),
                     load_npy(reference_labels, "--reference-labels"))
    embeddings = tuple(load_feature_matrix(path, "--label-embeddings") for path in label_embeddings)
    result = score_arrays(
        name, load_npy(features, "--features"), load_npy(labels, "--labels"),
        load_npy(probs, "--probs") if probs is not None else None, reference, validation_fraction, seed,
        target, embeddings,
    )
    if fmt == "table":
        click.echo(f"{result.metric} (v{result.version}): {result.value:.6g}  [{result.seconds:.3f} s]")
    elif fmt == "json":
        emit_json(result.as_json())
    else:
        record = result.as_json()
        emit_rows(list(record), [list(record.values())], fmt)


