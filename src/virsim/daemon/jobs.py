"""Daemon jobs: long work (coverage and trace exports) on a worker thread, so the daemon keeps
serving while it runs; clients poll `job.show` for progress and the result.

A job's function gets a `progress(done, total)` callback and returns a dict (its result) or raises
a VirsimError (its error). The function must only touch what it was handed: the event loop owns
the store, the sessions and the emulators. Finished jobs are kept (the last MAX_KEPT)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from virsim import protocol as p
from virsim.errors import NotFound, VirsimError

MAX_KEPT = 100
Work = Callable[[Callable[[int, int], None]], dict[str, Any]]


class Job:
    def __init__(self, kind: str, session: str) -> None:
        self.info = p.JobInfo(id=uuid.uuid4().hex[:10], kind=kind, session=session, state="running",
                              started_at=time.time())

    def progress(self, done: int, total: int) -> None:
        self.info.done, self.info.total = done, total

    def run(self, work: Work) -> None:
        try:
            result = work(self.progress)
            self.info.result, self.info.state = result, "done"
        except VirsimError as err:
            self.info.error = err.to_wire()
            self.info.state = "failed"
        except Exception as err:  # noqa: BLE001 - a job must end with a state, whatever broke
            self.info.error = VirsimError(f"{type(err).__name__}: {err}").to_wire()
            self.info.state = "failed"
        self.info.finished_at = time.time()


class JobService:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def submit(self, kind: str, session: str, work: Work) -> p.JobInfo:
        job = Job(kind, session)
        self.jobs[job.info.id] = job
        for old in [j for j in self.jobs.values() if j.info.state != "running"][:-MAX_KEPT]:
            self.jobs.pop(old.info.id, None)
        threading.Thread(target=job.run, args=(work,), name=f"job-{job.info.id}", daemon=True).start()
        return job.info.model_copy()

    def show(self, req: p.JobRef) -> p.JobInfo:
        job = self.jobs.get(req.job)
        if job is None:
            raise NotFound(f"no job {req.job!r} (jobs live as long as the daemon)", kind="job", id=req.job)
        return job.info.model_copy()

    def wait_all(self, timeout: float = 10.0) -> None:
        """At shutdown: give running jobs a moment to finish their file."""
        deadline = time.monotonic() + timeout
        for t in threading.enumerate():
            if t.name.startswith("job-"):
                t.join(max(0.0, deadline - time.monotonic()))
