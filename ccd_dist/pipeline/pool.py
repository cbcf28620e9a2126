"""The teacher pool: one long-lived worker per member for the whole run.

Under Ray each member is an actor that keeps its model in memory between
blocks, so a block's update starts from the model it already holds; after a
restart (resume) a worker loads its previous block's model from the run
directory instead.

An actor holds what it reserves for its whole life, even while idle. With more
members than CPUs (7 members on 2 cores), reserving `cpus_per_member` each would
leave the later actors unschedulable forever. So every actor reserves an equal
share of the capacity (at most `cpus_per_member`), and the pool itself runs at
most capacity / cpus_per_member calls at a time.
"""
from __future__ import annotations

import math

from ..ccd.teacher import MemberWorker
from ..distributed.executor import WorkerResources, make_executor


class TeacherPool:
    def __init__(self, cfg):
        self.cfg = cfg
        self.specs = {s.name: s for s in cfg.teacher.specs()}
        self.executor = None
        self.handles = {}

    def _start(self):
        if self.executor is None:
            ex = self.cfg.executor
            self.executor = make_executor(ex.kind, address=ex.address or None)
        return self.executor

    def _plan(self) -> tuple[WorkerResources, int]:
        """Per-actor reservation and the number of calls that may run at once."""
        ex = self.cfg.executor
        cpus, gpus = self._start().capacity()
        n = max(len(self.specs), 1)
        want_cpu = max(ex.cpus_per_member, 1e-3)
        res = WorkerResources(cpus=min(want_cpu, cpus / n), gpus=min(ex.gpus_per_member, gpus / n),
                              threads=max(1, int(want_cpu)))
        in_flight = max(1, math.floor(cpus / want_cpu + 1e-9))
        if ex.gpus_per_member > 0 and gpus > 0:
            in_flight = min(in_flight, max(1, math.floor(gpus / ex.gpus_per_member + 1e-9)))
        return res, in_flight

    def handle(self, name: str):
        if name not in self.handles:
            res, _ = self._plan()
            self.handles[name] = self._start().start(MemberWorker, self.specs[name], resources=res)
        return self.handles[name]

    def put(self, obj):
        return self._start().put(obj)

    def run(self, calls):
        """calls: [(member name, method, args, kwargs)] -> yields (name, result) as each finishes."""
        executor = self._start()
        prepared = [(self.handle(name), method, args, kwargs) for name, method, args, kwargs in calls]
        _, in_flight = self._plan()
        for index, result in executor.as_completed(prepared, max_in_flight=in_flight):
            yield calls[index][0], result

    def call(self, name: str, method: str, *args, **kwargs):
        return self._start().call_each([(self.handle(name), method, args, kwargs)])[0]

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None
            self.handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
