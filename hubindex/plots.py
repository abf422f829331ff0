"""Figures: the kappa heatmap with its ward-linkage dendrogram (Huang et al., Figure 1), and a
checkpoint's family as a layered graph (`hubindex lineage --plot`)."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hubindex.lineage_tree import Family

# The paper colours dendrogram clusters below this distance.
COLOR_THRESHOLD = 0.9


def short_name(checkpoint_id: str, width: int = 40) -> str:
    name = checkpoint_id.split(":", 1)[-1]
    return name if len(name) <= width else "..." + name[-(width - 3):]


@dataclass(frozen=True)
class KappaDendrogram:
    """The ward-linkage dendrogram of a kappa matrix, as scipy lays it out (`dendrogram(no_plot=True)`).

    `order` is the leaf order (rows and columns of the heatmap); segment k is the line through
    (icoord[k][t], dcoord[k][t]), t = 0..3, leaf i sitting at x = 5 + 10 i; `colors` are
    matplotlib colour names ('C0' above COLOR_THRESHOLD, the clusters below it 'C1', 'C2', ...).
    """

    order: list[int]
    icoord: list[list[float]]
    dcoord: list[list[float]]
    colors: list[str]


def kappa_dendrogram(values: np.ndarray) -> KappaDendrogram:
    """Ward linkage on the distance 1 - kappa. One function for the PNG (plot_kappa) and the web
    explorer's heatmap, so the two orders cannot drift apart."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    n = len(values)
    if n < 2:  # linkage needs two observations; one leaf is its own order
        return KappaDendrogram(list(range(n)), [], [], [])
    # 0 on the diagonal, symmetric; a missing (NaN) pair counts as unrelated rather than failing the tree.
    distance = np.nan_to_num(np.clip(1.0 - np.asarray(values, dtype=np.float64), 0.0, None), nan=1.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="ward")
    drawn = dendrogram(tree, no_plot=True, color_threshold=COLOR_THRESHOLD)
    return KappaDendrogram([int(i) for i in drawn["leaves"]], drawn["icoord"], drawn["dcoord"], drawn["color_list"])


def plot_kappa(ids: list[str], values: np.ndarray, out: Path, title: str = "kappa") -> None:
    """Write a PNG: dendrogram on top, heatmap below, rows and columns in dendrogram order."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    labels = [short_name(i) for i in ids]
    tree = kappa_dendrogram(values)
    order = tree.order
    n = len(ids)
    size = max(6.0, 0.35 * n + 3)
    figure = plt.figure(figsize=(size, size * 1.25))
    top = figure.add_axes((0.3, 0.78, 0.6, 0.17))
    # The segments as scipy's own dendrogram(ax=...) draws them, with its limits.
    for xs, ys, color in zip(tree.icoord, tree.dcoord, tree.colors):
        top.plot(xs, ys, color=color)
    top.set_xlim(0, 10 * n)
    highest = max((max(ys) for ys in tree.dcoord), default=0.0)
    top.set_ylim(0, 1.05 * highest if highest > 0 else 1.0)
    top.set_axis_off()
    top.set_title(title)
    heat = figure.add_axes((0.3, 0.08, 0.6, 0.68))
    image = heat.imshow(values[np.ix_(order, order)], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    heat.set_xticks(range(n), [labels[i] for i in order], rotation=90, fontsize=7)
    heat.set_yticks(range(n), [labels[i] for i in order], fontsize=7)
    colorbar = figure.add_axes((0.92, 0.08, 0.02, 0.68))
    figure.colorbar(image, cax=colorbar, label="kappa")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)


# Edge colours by relation (hubindex.lineage.RELATIONS); line style by evidence.
RELATION_COLORS = {"finetune": "#1f77b4", "adapter": "#ff7f0e", "quantized": "#2ca02c", "merge": "#d62728",
                   "distillation": "#9467bd", "unknown": "#7f7f7f"}
ROLE_COLORS = {"checkpoint": "#f2b400", "ancestor": "#6b8fc2", "descendant": "#9fd49b", "family": "#e6e6e6"}
# Nodes per row of the drawing: a wider layer (a base with many quantisations) wraps onto more rows.
ROW_NODES = 12


def layered_layout(nodes: list[str], edges: list[tuple[str, str]], row_nodes: int = ROW_NODES,
                   ) -> dict[str, tuple[float, float]]:
    """(x, y) of each node: y is minus its layer (the longest path down from a node without parents
    among `edges`, (child, parent) pairs of an acyclic graph), x its place in the layer, each layer
    ordered by its parents' mean x and wrapped onto rows of at most row_nodes."""
    parents: dict[str, list[str]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    known = set(nodes)
    for child, parent in edges:
        if child in known and parent in known and child != parent:
            parents[child].append(parent)
            children[parent].append(child)
    waiting = {n: len(parents[n]) for n in nodes}
    layer = {n: 0 for n in nodes}
    queue = deque(n for n in nodes if waiting[n] == 0)
    while queue:
        node = queue.popleft()
        for child in children[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                queue.append(child)
    by_layer: dict[int, list[str]] = defaultdict(list)
    for n in nodes:
        by_layer[layer[n]].append(n)
    position: dict[str, tuple[float, float]] = {}
    row = 0
    for level in sorted(by_layer):
        def centre(n: str) -> tuple[float, str]:
            xs = [position[p][0] for p in parents[n] if p in position]
            return (sum(xs) / len(xs) if xs else 0.0, n)

        ordered = sorted(by_layer[level], key=centre)
        for start in range(0, len(ordered), row_nodes):
            chunk = ordered[start:start + row_nodes]
            for i, n in enumerate(chunk):
                position[n] = (i - (len(chunk) - 1) / 2, -float(row))
            row += 1
    return position


def plot_lineage(family: Family, out: Path) -> None:
    """Write a PNG of the family: parents above children, edges coloured by relation, the checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    closure = [(e.child, e.parent) for e in family.edges if e.status == "closure"]
    # A member attached only by a cycle (its partner's other half) is drawn below its partner.
    placed = {child for child, _ in closure}
    position = layered_layout(family.members, closure + [(e.child, e.parent) for e in family.edges
                                                          if e.status == "cycle" and e.child not in placed])
    columns = max(sum(1 for x, y in position.values() if y == row) for row in {y for _, y in position.values()})
    rows = len({y for _, y in position.values()})
    figure, ax = plt.subplots(figsize=(max(6.0, 1.6 * columns + 1.5), max(3.5, 1.1 * rows + 1.8)))
    for edge in family.edges:
        (x0, y0), (x1, y1) = position[edge.parent], position[edge.child]
        style = ":" if edge.status == "cycle" else "-" if edge.primary.declared else "--"
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1, arrowprops={
            "arrowstyle": "-|>", "color": RELATION_COLORS.get(edge.primary.relation, "#7f7f7f"), "linestyle": style,
            "linewidth": 1.2, "shrinkA": 7, "shrinkB": 7, "mutation_scale": 9,
            "connectionstyle": "arc3,rad=0.25" if edge.status == "cycle" else "arc3"})
    for node in family.members:
        x, y = position[node]
        role = family.roles[node]
        ax.scatter([x], [y], s=220 if role == "checkpoint" else 90, zorder=2,
                   color=ROLE_COLORS[role] if node in family.in_catalog else "white",
                   edgecolors="black" if role == "checkpoint" else ROLE_COLORS[role] if role != "family" else "#999999",
                   linewidths=1.5 if node in family.in_catalog else 1.0,
                   linestyle="-" if node in family.in_catalog else "--")
        if family.hidden_children.get(node):
            ax.annotate(f"+{family.hidden_children[node]:,}", (x, y), xytext=(7, 2), textcoords="offset points",
                        fontsize=6, color="#666666", zorder=3)
        ax.annotate(short_name(node, 28), (x, y), xytext=(0, -11), textcoords="offset points", ha="center",
                    va="top", fontsize=6.5, fontweight="bold" if role == "checkpoint" else "normal", zorder=3,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    used = sorted({e.primary.relation for e in family.edges}, key=list(RELATION_COLORS).index)
    handles = [Line2D([], [], color=RELATION_COLORS[r], label=r) for r in used]
    handles += [Line2D([], [], color="black", linestyle=s, label=what) for s, what in
                (("-", "declared"), ("--", "recovered"), (":", "on a cycle (not in the closure)"))
                if any((":" if e.status == "cycle" else "-" if e.primary.declared else "--") == s for e in family.edges)]
    handles += [Line2D([], [], marker="o", linestyle="", markerfacecolor=ROLE_COLORS[r], markeredgecolor="#666666",
                       label=r) for r in ROLE_COLORS if r in family.roles.values()]
    if family.hidden_children:
        handles.append(Line2D([], [], linestyle="", label="+N  children not drawn"))
    if set(family.members) - family.in_catalog:
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="#666666",
                              label="not in the catalog"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    shown = f"{len(family.members):,} of {family.total:,} members"
    if family.left_out:
        shown += f"; {family.left_out:,} left out, leaves and the farthest first"
    ax.set_title(f"lineage of {short_name(family.checkpoint_id, 60)} ({shown})", fontsize=9)
    xs = [x for x, _ in position.values()]
    ys = [y for _, y in position.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.5)
    ax.set_axis_off()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(figure)
