"""A hubindex metric plugin: how well frozen features separate a task's classes by their means."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hubindex import hookimpl
from hubindex.types import NEEDS_HELD_OUT, Metric, MetricInput, MetricNotApplicable


class NearestCentroid(Metric):
    """Accuracy on the held-out rows of the nearest-class-mean classifier fitted on the train rows."""

    name = "nearest-centroid"
    version = "1"  # bump when a change alters the values: stored scores are then recomputed
    description = "held-out accuracy of the nearest class mean (Euclidean)"
    needs = frozenset({NEEDS_HELD_OUT})

    def score(self, data: MetricInput) -> float:
        train_x, train_y = data.train_rows()
        test_x, test_y = data.held_out_rows()
        if len(test_y) == 0:
            # Tiny classes keep all their rows for training: there is nothing to evaluate on.
            raise MetricNotApplicable("no held-out rows")
        classes = np.unique(train_y)
        centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in classes])
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 is the same for every class, so the
        # argmin needs neither it nor an (examples x classes x features) array.
        distances = (centroids**2).sum(axis=1) - 2.0 * test_x @ centroids.T
        predicted = classes[distances.argmin(axis=1)]
        return float((predicted == test_y).mean())


@hookimpl
def register_metrics(register: Callable[[type[Metric]], None]) -> None:
    register(NearestCentroid)
