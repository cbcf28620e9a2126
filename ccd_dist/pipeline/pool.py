"""The teacher pool: one long-lived worker per member for the whole run.

Under Ray each member is an actor that keeps its model in memory between
blocks, so a block's update starts from the model it already holds; after a
restart (resume) a worker loads its previous block's model from the run
directory instead.
"""
from __future__ import annotations

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

    def handle(self, name: str):
        if name not in self.handles:
            ex = self.cfg.executor
            res = WorkerResources(cpus=ex.cpus_per_member, gpus=ex.gpus_per_member)
            self.handles[name] = self._start().start(MemberWorker, self.specs[name], resources=res)
        return self.handles[name]

    def put(self, obj):
        return self._start().put(obj)

    def run(self, calls):
        """calls: [(member name, method, args, kwargs)] -> yields (name, result) as each finishes."""
        executor = self._start()
        prepared = [(self.handle(name), method, args, kwargs) for name, method, args, kwargs in calls]
        for index, result in executor.as_completed(prepared):
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
