"""A checkpoint's family as an SVG drawing: the layout of `hubindex lineage --plot` (parents above
children, hubindex.plots.layered_layout), in coordinates a template draws as lines, circles and
links. Every label is text for the template to escape; nothing here builds markup."""

from __future__ import annotations

from typing import Any

from hubindex.lineage_tree import Family
from hubindex.plots import RELATION_COLORS, ROLE_COLORS, layered_layout, short_name
from hubindex.web.render import checkpoint_url, lineage_url

COLUMN_PX = 150
ROW_PX = 90
MARGIN_PX = 80
LABEL_CHARS = 24


def family_drawing(family: Family) -> dict[str, Any]:
    """Nodes (x, y, colours, label, links) and edges (endpoints, colour, dash) in pixels."""
    closure = [(e.child, e.parent) for e in family.edges if e.status == "closure"]
    placed = {child for child, _ in closure}
    cycle = [(e.child, e.parent) for e in family.edges if e.status == "cycle" and e.child not in placed]
    position = layered_layout(family.members, closure + cycle)
    xs = [x for x, _ in position.values()] or [0.0]
    ys = [y for _, y in position.values()] or [0.0]

    def pixel(node: str) -> tuple[float, float]:
        x, y = position[node]
        return MARGIN_PX + (x - min(xs)) * COLUMN_PX, MARGIN_PX / 2 + (max(ys) - y) * ROW_PX

    nodes = []
    for node in family.members:
        x, y = pixel(node)
        role = family.roles[node]
        known = node in family.in_catalog
        nodes.append({
            "checkpoint_id": node, "x": x, "y": y, "r": 11 if role == "checkpoint" else 7, "role": role,
            "fill": ROLE_COLORS[role] if known else "#ffffff",
            "stroke": "#000000" if role == "checkpoint" else ROLE_COLORS[role] if role != "family" else "#999999",
            "dashed": not known, "label": short_name(node, LABEL_CHARS),
            "href": checkpoint_url(node) if known else None, "family_href": lineage_url(node) if known else None,
            "hidden_children": family.hidden_children.get(node, 0)})
    edges = []
    for edge in family.edges:
        (x1, y1), (x2, y2) = pixel(edge.parent), pixel(edge.child)
        primary = edge.primary
        edges.append({
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "relation": primary.relation,
            "color": RELATION_COLORS.get(primary.relation, "#7f7f7f"),
            "dash": "2,3" if edge.status == "cycle" else "" if primary.declared else "6,4",
            "title": f"{edge.child} <- {edge.parent}: {edge.label()} [{edge.status}]"})
    width = MARGIN_PX * 2 + (max(xs) - min(xs)) * COLUMN_PX
    height = MARGIN_PX + (max(ys) - min(ys)) * ROW_PX + 30
    return {"width": max(width, 320), "height": height, "nodes": nodes, "edges": edges,
            "legend": [{"relation": r, "color": c} for r, c in RELATION_COLORS.items()]}
