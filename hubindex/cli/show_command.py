"""`hubindex show CHECKPOINT`: one checkpoint's card (hubindex.cards), read-only."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from hubindex.cli.common import reading_catalog
from hubindex.cli.root import cli
from hubindex.index import Index
from hubindex.lineage_tree import evidence_label, status_note
from hubindex.output import emit_json, emit_rows, output_format


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _section(title: str, lines: list[str], empty: str) -> list[str]:
    return ["", title, *(f"  {line}" for line in lines or [empty])]


def render_card(card: dict[str, Any]) -> str:
    """The card as sections of aligned lines, for reading in a terminal."""
    from tabulate import tabulate

    def table(rows: list[list[Any]], headers: list[str]) -> list[str]:
        cells = [[_text(v) if isinstance(v, datetime) else v for v in row] for row in rows]
        return tabulate(cells, headers=headers, tablefmt="simple", disable_numparse=True).splitlines()

    meta = {k: v for k, v in card["metadata"].items() if v not in (None, [], {})}
    width = max(map(len, meta), default=0)
    out = [f"checkpoint {card['checkpoint_id']}"]
    out += _section("metadata", [f"{k:<{width}}  {_text(v)}" for k, v in meta.items()], "nothing stored")
    out += _section("license", [_text(card["license"])] if card["license"] else [], "unknown")
    size = card["size"]
    size_lines = []
    if size["params_total"] is not None:
        size_lines.append(f"params      {size['params_total']:,} ({size['params_total'] / 1e6:.1f}M)")
    if size["params_by_dtype"]:
        size_lines.append("by dtype    " + ", ".join(f"{k} {v:,}" for k, v in size["params_by_dtype"].items()))
    if size["weight_bytes"] is not None:
        size_lines.append(f"weights     {size['weight_bytes']:,} bytes")
    out += _section("size", size_lines, "unknown")
    lineage = card["lineage"]
    lines = []
    if lineage["ancestors_total"] or lineage["descendants_total"]:
        a, d = lineage["ancestors_total"], lineage["descendants_total"]
        root = ", ".join(lineage["roots"]) or "itself"
        lines.append(f"root      {root} ({a:,} ancestor{'s' * (a != 1)}, {d:,} descendant{'s' * (d != 1)}; "
                     f"`hubindex lineage {card['checkpoint_id']}` shows them)")
    for kind, edges in (("parent", lineage["parents"]), ("child", lineage["children"])):
        for edge in edges:
            line = f"{kind:<8}  {edge['checkpoint_id']}  " + evidence_label(
                edge["relation"], edge["evidence"], edge["confidence"], edge["declared"], edge["other_evidence"])
            note = status_note(edge["status"], edge["note"])
            if note:
                line += f"  {note}"
            elif not edge["in_catalog"]:
                line += "  (not in the catalog)"
            lines.append(line)
    if lineage["children_total"] > len(lineage["children"]):
        lines.append(f"... {lineage['children_total'] - len(lineage['children']):,} more children "
                     f"(`hubindex lineage {card['checkpoint_id']} --down --depth 1` lists them)")
    out += _section("lineage", lines, "no parent or child known")
    out += _section("probed corpora", table(
        [[p["corpus"], p["corpus_hash"][:12], p["layer"], p["n_items"], p["n_kept"], p["dim"], p["probed_at"]]
         for p in card["probed"]], ["corpus", "hash", "layer", "items", "kept", "dim", "probed_at"])
        if card["probed"] else [], "not probed (`hubindex probe`)")
    lines = []
    for entry in card["neighbors"]:
        lines.append(f"on {entry['corpus']} ({entry['corpus_hash'][:12]}):")
        lines += [f"  {row}" for row in table([[n["checkpoint_id"], f"{n['kappa']:.4f}", n["n_items"]]
                                              for n in entry["neighbors"]], ["checkpoint_id", "kappa", "items"])]
    out += _section("nearest neighbours (stored exact kappa)", lines,
                    "no kappa stored (`hubindex kappa` after probing)")
    out += _section("task scores", table(
        [[s["task"], s["metric"], _text(s["value"]), "higher" if s["higher_is_better"] else "lower",
          s["computed_at"]] for s in card["task_scores"]], ["task", "metric", "value", "better", "computed_at"])
        if card["task_scores"] else [], "none (`hubindex score`)")
    out += _section("open failures", table(
        [[f["stage"], f["kind"], f["message"], f["occurred_at"]] for f in card["open_failures"]],
        ["stage", "kind", "message", "occurred_at"]) if card["open_failures"] else [], "none")
    return "\n".join(out) + "\n"


@cli.command("show")
@click.argument("checkpoint")
@output_format
@click.pass_obj
def show_command(index: Index, checkpoint: str, fmt: str) -> None:
    """One checkpoint's card: metadata, license, size, lineage, probes, neighbours, scores, failures.

    \b
    CHECKPOINT is a checkpoint_id (hf:org/name, timm:arch.tag, local:/path), or a Hub repo id.
    Neighbours are the highest stored exact kappa per probed corpus (nothing is computed).
    --format json gives the card as one JSON object; csv and ndjson give it as (section, key,
    value) rows.

    \b
    Examples:
      hubindex show hf:google/vit-base-patch16-224
      hubindex show timm:resnet50.a1_in1k --format json
    """
    from hubindex.cards import card_rows, checkpoint_card

    with reading_catalog(index) as catalog:
        card = checkpoint_card(catalog, checkpoint)
    if fmt == "json":
        emit_json(card)
    elif fmt == "table":
        click.echo(render_card(card), nl=False)
    else:
        emit_rows(["section", "key", "value"], card_rows(card), fmt)
