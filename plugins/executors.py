"""Built-in executors: `local` (in-process, sequential) and `ray` (one Ray task per item).

`ray` starts a local Ray instance (`num_cpus` = --workers, default: this machine's cores) or
joins a running cluster (`--address`, e.g. `auto` or `ray://head:10001`). Large shared data goes
into the object store once; each item is one task with the resources the run asks for
(`num_gpus=1` per checkpoint when probing on CUDA); results come back as tasks finish. A task
that raises or whose worker dies comes back as an error for that item, never as the end of the
run. Tasks are not retried: a checkpoint that crashed its worker is recorded as failed and the
next run tries it again.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable, Iterable, Iterator

from hubindex import hookimpl
from hubindex.errors import HubindexError, UsageError
from hubindex.types import Executor, TaskResources, WorkDone

RAY_MISSING = "executor 'ray' needs Ray, which is not installed: pip install 'hubindex[ray]'"
_END = object()  # the end of the work items
CONNECT_TIMEOUT_S = 5.0


class LocalExecutor(Executor):
    """Runs every item in this process, one after the other (no copies, no extra processes)."""

    name = "local"
    version = "1"
    description = "in-process, one checkpoint at a time"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if address is not None:
            raise UsageError("--address needs --executor ray (the local executor runs in this process)")
        if workers not in (None, 1):
            raise UsageError("--workers needs --executor ray (the local executor runs one checkpoint at a time)")
        super().__init__(address, workers)

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], resources: TaskResources,
            shared: Any = None) -> Iterator[WorkDone]:
        for item in items:
            yield WorkDone(item, fn(item, shared))


def run_item(fn: Callable[[Any, Any], Any], item: Any, shared: Any, threads: int) -> Any:
    """The body of one Ray task: fn on the item with torch limited to the task's CPUs."""
    import torch

    # A worker process is reused by tasks of other sizes; OMP_NUM_THREADS alone is read only once.
    torch.set_num_threads(threads)
    return fn(item, shared)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's text (Ray's hold tracebacks and advice)."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def reachable_or_error(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nothing listens on: Ray itself retries for minutes."""
    target = address.removeprefix("ray://")
    host, colon, port = target.rpartition(":")
    if not colon or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise HubindexError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


class RayExecutor(Executor):
    """One Ray task per item on a local Ray instance or a cluster; results in completion order."""

    name = "ray"
    version = "1"
    description = "one Ray task per checkpoint (local instance, or a cluster with --address)"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        super().__init__(address, workers)
        try:
            import ray
        except ImportError:
            raise UsageError(RAY_MISSING) from None
        self.ray = ray
        self.started_here = False  # whether close() shuts Ray down
        self.remote: Any = None

    def connect(self) -> Any:
        """Start (or join) Ray once; the ray module."""
        ray = self.ray
        if ray.is_initialized():
            return ray
        if self.address is None:
            # A private instance on this machine: no dashboard, no usage report leaving it.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            options: dict[str, Any] = {"num_cpus": self.workers or os.cpu_count() or 1, "include_dashboard": False}
        else:
            reachable_or_error(self.address)
            options = {"address": self.address}
        try:
            ray.init(**options, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            what = f"join Ray at {self.address}" if self.address else "start Ray on this machine"
            raise HubindexError(f"cannot {what}: {' '.join(str(exc).split())}") from None
        self.started_here = True
        return ray

    def cuda_available(self) -> bool:
        return self.connect().cluster_resources().get("GPU", 0) > 0

    def in_flight_limit(self, resources: TaskResources) -> int:
        """How many tasks to keep submitted: --workers, else as many as the cluster can run at once."""
        if self.workers is not None:
            return self.workers
        total = self.ray.cluster_resources()
        fits = [total.get("CPU", 0) / resources.cpus] if resources.cpus else []
        if resources.gpus:
            fits.append(total.get("GPU", 0) / resources.gpus)
        return max(1, int(min(fits))) if fits else 1

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], resources: TaskResources,
            shared: Any = None) -> Iterator[WorkDone]:
        ray = self.connect()
        if self.remote is None:
            self.remote = ray.remote(run_item)
        task = self.remote.options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0)
        threads = max(1, int(resources.cpus))
        shared_ref = ray.put(shared)  # sent to each node once, not once per task
        limit = self.in_flight_limit(resources)
        pending: dict[Any, Any] = {}
        remaining = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    item = next(remaining, _END)
                    if item is _END:
                        exhausted = True
                    else:
                        pending[task.remote(fn, item, shared_ref, threads)] = item
                if not pending:
                    return
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                yield self.collect(ready, pending.pop(ready))
        finally:
            for ref in pending:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)

    def collect(self, ref: Any, item: Any) -> WorkDone:
        """The finished task's result, or the Ray error that ended it (a raising task, a dead worker)."""
        exceptions = self.ray.exceptions
        try:
            return WorkDone(item, self.ray.get(ref))
        except exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            return WorkDone(item, error=f"Ray task raised {type(cause).__name__}: {cause}")
        except exceptions.OutOfMemoryError as exc:
            return WorkDone(item, error=f"Ray stopped the task: {first_line(exc)}", error_kind="out-of-memory")
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.LocalRayletDiedError) as exc:
            return WorkDone(item, error=f"the Ray worker died: {first_line(exc)}", error_kind="worker-crashed")
        except exceptions.RayError as exc:
            return WorkDone(item, error=f"{type(exc).__name__}: {first_line(exc)}")

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_here = False
        self.remote = None


@hookimpl
def register_executors(register):  # noqa: ANN001, ANN201 - hook signature
    register(LocalExecutor)
    register(RayExecutor)
