"""`hubindex lineage CHECKPOINT`: its ancestors and descendants as a tree, or its family as a plot; read-only."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from hubindex.catalog import Catalog
from hubindex.cli.common import reading_catalog
from hubindex.cli.root import cli
from hubindex.errors import UsageError
from hubindex.index import Index
from hubindex.output import TABLE_ROWS, emit_rows, output_format


def _can_draw_boxes() -> bool:
    try:
        "├─└│↺↪·".encode(sys.stdout.encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


@cli.command("lineage")
@click.argument("checkpoint")
@click.option("--up", "direction", flag_value="up", help="Only its ancestors.")
@click.option("--down", "direction", flag_value="down", help="Only its descendants.")
@click.option("--depth", type=click.IntRange(1, None), default=None, metavar="N",
              help="At most N edges away [default: all the way].")
@click.option("--plot", "plot_file", type=click.Path(path_type=Path), metavar="OUT.png",
              help="Draw its family (its roots' descendants and its ancestors) to this PNG instead.")
@output_format
@click.pass_obj
def lineage_command(index: Index, checkpoint: str, direction: str | None, depth: int | None,
                    plot_file: Path | None, fmt: str) -> None:
    """A checkpoint's ancestors and descendants, as a tree.

    \b
    CHECKPOINT is a checkpoint_id (hf:org/name, timm:arch.tag), a Hub repo id, or a parent that
    lineage names but the catalog has not crawled. Ancestors come first, up to the roots: every
    parent stated for it and for each ancestor, with its relation and evidence - recovered edges
    marked "recovered: weights, 0.82", edges on a cycle, to a name that is no checkpoint id, or
    outweighed by another marked so and not followed. Then its descendants, through the edges
    the closure uses (what the descendants() macro counts). A node reached along several paths
    (a merge) is expanded once, on its shortest path.

    \b
    --format csv|json|ndjson gives one row per line: the checkpoint itself (direction self), then
    each edge (checkpoint_id is the child, parent the parent) with depth, direction (up, down),
    status (closure, cycle, unresolved, not used) and the other evidence stating it. A table
    shows the first 1,000 lines of the tree; exports carry every edge.

    \b
    --plot OUT.png draws the family instead: parents above children, edges coloured by relation
    (dashed: recovered, dotted: on a cycle), up to 200 checkpoints: the checkpoint, its ancestors,
    its descendants, then its roots' other descendants; those with children before leaves, each
    nearest first; "+N" beside a checkpoint counts its children left out.

    \b
    Examples:
      hubindex lineage hf:meta-llama/Llama-2-7b-hf --down --depth 1
      hubindex lineage hf:acme/lora --up --format json
      hubindex lineage timm:vit_base_patch16_224.augreg_in21k_ft_in1k --plot family.png
    """
    from hubindex.cards import resolve_checkpoint
    from hubindex.lineage_tree import has_lineage, lineage_name, lineage_tree

    if plot_file is not None and (direction is not None or depth is not None):
        raise UsageError("--plot draws the whole family: drop --up, --down and --depth")
    with reading_catalog(index) as catalog:
        if not has_lineage(catalog):
            raise UsageError(f"the catalog {index.catalog_path} predates lineage; open it for writing once "
                             "(any `hubindex crawl ...`) to upgrade it")
        try:
            checkpoint_id = resolve_checkpoint(catalog, checkpoint)
        except UsageError:
            found = lineage_name(catalog, checkpoint)
            if found is None:
                raise
            checkpoint_id = found
        if plot_file is not None:
            _plot(catalog, checkpoint_id, plot_file)
            return
        tree = lineage_tree(catalog, checkpoint_id, up=direction != "down", down=direction != "up", depth=depth)
    if fmt != "table":
        from hubindex.lineage_tree import TREE_COLUMNS

        emit_rows(TREE_COLUMNS, tree.rows(), fmt)
        return
    from hubindex.lineage_tree import tree_lines

    lines = tree_lines(tree, ascii_only=not _can_draw_boxes())
    for line in lines[:TABLE_ROWS]:
        click.echo(line)
    if len(lines) > TABLE_ROWS:
        click.echo(f"hubindex: showing {TABLE_ROWS:,} of {len(lines):,} lines; --depth N shortens the tree, "
                   "--format csv|json|ndjson gives every edge", err=True)


def _plot(catalog: Catalog, checkpoint_id: str, out: Path) -> None:
    from hubindex.lineage_tree import family
    from hubindex.plots import plot_lineage

    members = family(catalog, checkpoint_id)
    plot_lineage(members, out)
    left = f"; {members.left_out:,} left out, leaves and the farthest first" if members.left_out else ""
    click.echo(f"wrote {out}: {len(members.members):,} of the {members.total:,} checkpoints of the family of "
               f"{checkpoint_id}, {len(members.edges):,} edges{left}", err=True)


@cli.command("recover-lineage")
@click.argument("checkpoint_ids", nargs=-1, metavar="[CHECKPOINT_ID]...")
@click.option("--where", metavar="SQL-CONDITION",
              help="Recover parents for the checkpoints matching this condition [default: all with local weights].")
@output_format
@click.pass_obj
def recover_lineage_command(index: Index, checkpoint_ids: tuple[str, ...], where: str | None, fmt: str) -> None:
    """Recover parents of checkpoints that declare none, from their weights (and kappa).

    \b
    Checkpoints with a local copy are compared by their weights: those sharing at least 90% of a
    child's tensors are candidate parents; pairwise weight distances and the change of weight
    kurtosis give a directed tree (hubindex/lineage_recovery.py has the method and its measured
    precision). Edges are stored with evidence 'weights' (or 'kappa') and declared = false, and
    only for children without declared edges: declared edges always win. Recovered edges below
    the closure's confidence threshold are kept in `lineage` but not followed by descendants().

    \b
    Examples:
      hubindex recover-lineage
      hubindex recover-lineage --where "library_name = 'timm'"
      hubindex sql "SELECT * FROM lineage WHERE NOT declared ORDER BY confidence DESC"
    """
    from hubindex.lineage_recovery import recover_lineage
    from hubindex.probing import select_checkpoints

    selected = None
    if where is not None or checkpoint_ids:
        selected = select_checkpoints(index, where, checkpoint_ids)
    with index.open_catalog() as catalog:
        report = recover_lineage(catalog, selected)
    click.echo(f"recover-lineage: {report.examined} checkpoints with local weights, {report.profiled} compared; "
               f"{len(report.edges)} edges recovered, {report.written} children updated, "
               f"{report.declared_children} left to their declared parents; {report.seconds:.1f} s", err=True)
    for checkpoint_id, why in sorted(report.failures.items()):
        click.echo(f"  not read: {checkpoint_id}: {why}", err=True)
    header = ["checkpoint_id", "parent", "relation", "evidence", "confidence", "distance", "detail"]
    rows = [[e.child, e.parent, e.relation, e.evidence, e.confidence, e.distance, e.detail] for e in report.edges]
    emit_rows(header, rows, fmt)
