"""Figures: the kappa heatmap with its ward-linkage dendrogram (Huang et al., Figure 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The paper colours dendrogram clusters below this distance.
COLOR_THRESHOLD = 0.9


def short_name(checkpoint_id: str, width: int = 40) -> str:
    name = checkpoint_id.split(":", 1)[-1]
    return name if len(name) <= width else "..." + name[-(width - 3):]


def plot_kappa(ids: list[str], values: np.ndarray, out: Path, title: str = "kappa") -> None:
    """Write a PNG: dendrogram on top, heatmap below, rows and columns in dendrogram order."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    labels = [short_name(i) for i in ids]
    # Ward linkage on the distance 1 - kappa (0 on the diagonal, symmetric).
    distance = np.clip(1.0 - values, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="ward")
    n = len(ids)
    size = max(6.0, 0.35 * n + 3)
    figure = plt.figure(figsize=(size, size * 1.25))
    top = figure.add_axes((0.3, 0.78, 0.6, 0.17))
    order = dendrogram(tree, ax=top, no_labels=True, color_threshold=COLOR_THRESHOLD)["leaves"]
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
