"""Running the jobs through the fork server, in the coordinator.

At most ``jobs`` notebooks run at once. Every wait has a deadline: a notebook is killed
at its timeout whatever it sends, and no notebook is read for more than
MAX_READ_PER_TURN bytes before the others get a turn. A notebook that timed out while
others ran is retried alone before its timeout is final. Whatever goes wrong with one
job (a malformed message, an exception in the grader) becomes that job's result
(status `error`), never the run's. A fork server that dies is restarted and its
running jobs retried once.
"""
import base64
import json
import os
import select
import shutil
import sys
import time
import traceback
from collections import deque

from rnnbook.grading.defaults import (KILL_GRACE_S, MAX_READ_PER_TURN, MAX_STREAM_BYTES, MAX_TEXT,
                                      OUTPUT_CAP)
from rnnbook.grading.wire import FrameReader, WireError, decode_value


class Pool:
    """``prepare(job)`` parses the notebook (returns False when it is not runnable and was
    already given its result); ``finish(job, status, reason)`` writes the result."""

    def __init__(self, sandbox, base, jobs, timeout, memory_mb, disk_mb, prepare, finish,
                 restart, bar=None):
        self.sandbox, self.base, self.limit = sandbox, base, jobs
        self.timeout, self.memory_mb, self.disk_mb = timeout, memory_mb, disk_mb
        self.prepare, self.on_finish, self.restart, self.bar = prepare, finish, restart, bar
        self.running, self.by_fd = {}, {}
        self.pending, self.solo = deque(), deque()

    def run(self, jobs):
        self.pending.extend(jobs)
        while self.pending or self.running or self.solo:
            self._start_what_fits()
            now = time.monotonic()
            wait = min([0.5] + [j.deadline - now for j in self.running.values() if not j.finished])
            fds = [self.sandbox.sock] + [j.fd for j in self.running.values() if j.fd is not None]
            ready, _, _ = select.select(fds, [], [], max(0.0, wait))
            restart = False
            for r in ready:
                if r is self.sandbox.sock:
                    restart |= self._from_sandbox()
                elif r in self.by_fd:
                    self._guard(self.by_fd[r], self._drain)
            self._deadlines()
            if restart:
                self._restart()

    def _start_what_fits(self):
        while self.pending and len(self.running) < self.limit:
            self._guard(self.pending.popleft(), self._start)
        if not self.pending and not self.running and self.solo:
            job = self.solo.popleft()
            job.solo = True
            self._guard(job, self._start)

    def _guard(self, job, action):
        """Run action(job); any exception becomes the job's `error` result."""
        try:
            action(job)
        except Exception as e:
            self._kill(job)
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"rnnbook grade: internal error grading {job.student}/{job.exercise.name}: "
                  f"{type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})",
                  file=sys.stderr)
            self.finish(job, "error", f"the grader failed on this notebook ({type(e).__name__}: "
                        f"{str(e)[:300]}); tell your instructor")
            job.exited = True
            self.running.setdefault(job.key, job)

    def _start(self, job):
        job.attempts += 1
        job.key = f"{job.id}.{job.attempts}"          # this attempt, in the fork server's messages
        if job.cells is None and not self.prepare(job):
            if self.bar is not None:
                self.bar.update(1)
            return
        job.dir = os.path.join(self.base, f"j{job.id}-{job.attempts}")
        self.sandbox.workdir(os.path.join(job.dir, "work"))
        spec = {"notebook_name": f"{job.exercise.name}.ipynb",
                "notebook_b64": base64.b64encode(job.data).decode(),
                "workdir": os.path.join(job.dir, "work"), "memory_mb": self.memory_mb,
                "disk_mb": self.disk_mb, "timeout": self.timeout, "output_cap": OUTPUT_CAP,
                "cells": [{"index": c.index, "number": c.number, "source": c.source}
                          for c in job.run_cells],
                "checks": job.exercise.specs}
        spec_path = os.path.join(job.dir, "spec.json")        # the secret inputs: 0600
        with open(os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(spec, f)
        del spec
        fds = [os.open(spec_path, os.O_RDONLY | os.O_CLOEXEC),
               os.open(os.path.join(job.dir, "output.txt"),
                       os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)]
        try:
            self.sandbox.send({"op": "run", "job": job.key}, fds)
        finally:
            for fd in fds:
                os.close(fd)
        job.data = None
        job.reader = FrameReader(max_total=MAX_STREAM_BYTES)
        job.started = time.monotonic()
        job.deadline = job.started + self.timeout
        for other in self.running.values():
            other.crowded = True
        job.crowded = bool(self.running)
        self.running[job.key] = job

    def _from_sandbox(self):
        """Act on one message of the fork server; True if it is gone."""
        msg, fds = self.sandbox.recv()
        if msg is None:
            for fd in fds:
                os.close(fd)
            return True
        job = self.running.get(msg.get("job"))
        if job is None or job.finished and msg.get("op") == "started":
            for fd in fds:
                os.close(fd)
            if job is not None:                   # finished before it started: stop it
                self.sandbox.send({"op": "kill", "job": job.key})
            return False
        if msg.get("op") == "started" and fds:
            job.pid, job.fd = msg.get("pid"), fds[0]
            for fd in fds[1:]:
                os.close(fd)
            os.set_blocking(job.fd, False)
            self.by_fd[job.fd] = job
        elif msg.get("op") == "exited":
            for fd in fds:
                os.close(fd)
            job.exited, job.exit_status = True, msg.get("status")
            self._guard(job, self._drain)
            if not job.finished:
                self.finish(job, None)
        elif msg.get("op") == "failed":
            job.exited = True
            self.finish(job, "error", f"the sandbox could not start it ({str(msg.get('reason'))[:200]})")
        return False

    def _drain(self, job):
        """Read what the notebook has written so far (at most MAX_READ_PER_TURN bytes)."""
        budget = MAX_READ_PER_TURN
        while job.fd is not None and not job.finished and budget > 0:
            try:
                data = os.read(job.fd, min(1 << 16, budget))
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                return
            budget -= len(data)
            error = None
            try:
                messages = job.reader.feed(data)
            except WireError as e:
                messages, error = e.messages, e
            try:
                for msg in messages:
                    self._message(job, msg)
            except WireError as e:
                error = e
            if error is not None:
                self._kill(job)
                self.finish(job, "error", f"the notebook sent malformed data to the grader ({error})")
            elif job.done:
                self._kill(job)
                self.finish(job, None)

    def _message(self, job, msg):
        op, n_checks = msg.get("op"), len(job.exercise.checks)
        index = msg.get("index")
        if op == "cell" and msg.get("event") == "start" and index in job.run_indexes \
                and job.current_cell is None and index not in job.ended:
            job.current_cell = index
        elif op == "cell" and msg.get("event") == "end" and index == job.current_cell:
            job.current_cell = None
            job.ended.add(index)
            if msg.get("error") is not None:
                info = error_info(msg["error"])
                job.cell_errors[index] = info
                job.memory |= info["memory"]
        elif op == "check" and type(index) is int and 0 <= index < n_checks and index not in job.received:
            if "error" in msg:
                info = error_info(msg["error"])
                job.received[index] = ("error", info)
                job.memory |= info["memory"]
            else:
                job.received[index] = ("value", decode_value(msg.get("value")))
        elif op == "rule" and type(index) is int and 0 <= index < n_checks and isinstance(msg.get("what"), str):
            if len(job.rules.setdefault(index, [])) < 5:
                job.rules[index].append(msg["what"][:500])
        elif op == "stop" and msg.get("reason") == "memory":
            job.memory = True
        elif op == "done" and not job.done:
            job.done = True
            if type(msg.get("dropped")) is int:
                job.dropped = msg["dropped"]
        else:
            raise WireError(f"unexpected message {str(op)[:40]!r}")

    def _deadlines(self):
        now = time.monotonic()
        for job in list(self.running.values()):
            if not job.finished and now > job.deadline:
                self._kill(job)
                if job.crowded and not job.solo:
                    job.finished, job.finished_at, job.status = True, now, "retry"
                else:
                    self.finish(job, "timeout")
            if job.finished and job.fd is not None:
                self.by_fd.pop(job.fd, None)
                os.close(job.fd)
                job.fd = None
            if job.finished and not job.exited and now - job.finished_at > KILL_GRACE_S:
                job.exited = True                 # its exit was never reported; move on
            if job.finished and job.exited:
                del self.running[job.key]
                if job.dir:
                    shutil.rmtree(job.dir, ignore_errors=True)
                if job.status == "retry":
                    self.solo.append(job.fresh())
                elif self.bar is not None:
                    self.bar.update(1)

    def _kill(self, job):
        if job.pid is not None and not job.exited:
            try:
                self.sandbox.send({"op": "kill", "job": job.key})
            except OSError:
                pass

    def _restart(self):
        """The fork server died (killed from outside?): start another; retry its jobs once."""
        self.sandbox = self.restart(self.sandbox)
        for job in list(self.running.values()):
            if job.fd is not None:
                self.by_fd.pop(job.fd, None)
                os.close(job.fd)
            del self.running[job.key]
            if job.dir:
                shutil.rmtree(job.dir, ignore_errors=True)
            if job.status == "retry":
                self.solo.append(job.fresh())
            elif job.finished:
                if self.bar is not None:
                    self.bar.update(1)
            elif job.attempts >= 2:
                self.finish(job, "error", "the grader's sandbox stopped while this notebook ran")
            else:
                self.pending.appendleft(job.fresh())

    def finish(self, job, status, reason=""):
        if job.finished:
            return
        job.finished, job.finished_at = True, time.monotonic()
        job.status = self.on_finish(job, status, reason)


def error_info(e):
    if not (isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("message"), str)):
        raise WireError("malformed error report")
    tb = e.get("traceback") if isinstance(e.get("traceback"), str) else ""
    return {"type": e["type"][:100], "message": e["message"][:MAX_TEXT],
            "traceback": tb[-MAX_TEXT:], "memory": e.get("memory") is True}
