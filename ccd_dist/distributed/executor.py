"""Executors: run stateful workers in-process or as Ray actors, behind one interface.

The pipeline creates workers (teacher members, the student) through an executor
and calls their methods; it never knows whether a worker lives in this process
or in a Ray actor. Ray is the default when it is importable; the in-process
executor is the fallback and the debugging path. Results are the same either
way: every worker seeds itself and pins its own thread count.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class WorkerResources:
    """What a worker reserves for its whole life (cpus, gpus) and the threads it computes with."""

    cpus: float = 1.0
    gpus: float = 0.0
    threads: int = 1


def _pin_threads(threads: int) -> None:
    import numba
    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


class _LocalHandle:
    """A worker object living in this process; `call` runs a method now."""

    def __init__(self, obj):
        self.obj = obj

    def call(self, method: str, *args, **kwargs):
        return getattr(self.obj, method)(*args, **kwargs)


class InProcessExecutor:
    """Runs every worker in this process, one call at a time."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads or os.cpu_count() or 1

    def capacity(self) -> tuple[float, float]:
        """(CPUs, GPUs) available to workers."""
        return float(self.threads), 0.0

    def start(self, cls, *args, resources: WorkerResources | None = None, **kwargs):
        _pin_threads(self.threads)
        return _LocalHandle(cls(*args, **kwargs))

    def call_all(self, handles, method: str, *args, **kwargs) -> list:
        """Call `method` on every worker; same order as `handles`."""
        return [h.call(method, *args, **kwargs) for h in handles]

    def call_each(self, calls) -> list:
        """`calls` = [(handle, method, args, kwargs)]; results in order."""
        return [h.call(m, *a, **kw) for h, m, a, kw in calls]

    def as_completed(self, calls, max_in_flight: int | None = None):
        """Yield (index, result) for each call as it finishes (here: in order)."""
        for index, (h, m, a, kw) in enumerate(calls):
            yield index, h.call(m, *a, **kw)

    def put(self, obj):
        return obj

    def shutdown(self) -> None:
        pass


class _ActorHost:
    """Ray actor body: hosts one worker object and forwards method calls."""

    def __init__(self, cls, threads, args, kwargs):
        _pin_threads(threads)
        self.obj = cls(*args, **kwargs)

    def call(self, method, args, kwargs):
        import ray

        args = [ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args]
        return getattr(self.obj, method)(*args, **kwargs)


class RayExecutor:
    """Runs every worker as a Ray actor; calls on different actors run in parallel.

    Connects to `address` (a cluster, or "auto" inside `ray job submit`) or starts
    a local Ray on demand with `num_cpus`. Each actor asks for `resources.cpus`
    CPUs and `resources.gpus` GPUs, so the same code places members on GPUs on a
    GPU cluster.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        import ray

        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
                self._started_here = True
        self._actor_cls = ray.remote(_ActorHost)

    def capacity(self) -> tuple[float, float]:
        total = self._ray.cluster_resources()
        return float(total.get("CPU", 1.0)), float(total.get("GPU", 0.0))

    def start(self, cls, *args, resources: WorkerResources | None = None, **kwargs):
        res = resources or WorkerResources()
        return self._actor_cls.options(num_cpus=res.cpus, num_gpus=res.gpus).remote(cls, res.threads, args, kwargs)

    def call_each(self, calls) -> list:
        refs = [h.call.remote(m, list(a), kw) for h, m, a, kw in calls]
        return self._ray.get(refs)

    def call_all(self, handles, method: str, *args, **kwargs) -> list:
        return self.call_each([(h, method, args, kwargs) for h in handles])

    def as_completed(self, calls, max_in_flight: int | None = None):
        """Yield (index, result) for each call as soon as it finishes, so the
        caller can save a finished member while the others still train.

        At most `max_in_flight` calls run at once; the rest wait their turn.
        """
        limit = max_in_flight or len(calls)
        queue = list(enumerate(calls))
        index_of, pending = {}, []
        while queue or pending:
            while queue and len(pending) < limit:
                index, (h, m, a, kw) = queue.pop(0)
                ref = h.call.remote(m, list(a), kw)
                index_of[ref] = index
                pending.append(ref)
            done, pending = self._ray.wait(pending, num_returns=1)
            for ref in done:
                yield index_of[ref], self._ray.get(ref)

    def put(self, obj):
        """Share a large object (a block) with every actor once."""
        return self._ray.put(obj)

    def shutdown(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(kind: str = "auto", *, address: str | None = None, num_cpus: int | None = None):
    """`auto`: Ray when importable (local Ray started on demand), else in-process."""
    if kind not in ("auto", "ray", "local"):
        from ..errors import InputError

        raise InputError(f"executor must be auto, ray or local, got {kind!r}", path="--executor")
    if kind == "local":
        return InProcessExecutor(threads=num_cpus)
    try:
        import ray  # noqa: F401
    except ImportError:
        if kind == "ray":
            raise
        return InProcessExecutor(threads=num_cpus)
    return RayExecutor(address=address, num_cpus=num_cpus)
