"""Running the jobs through the fork server, in the coordinator.

At most ``jobs`` notebooks run at once. Every wait has a deadline: a notebook is killed
at its timeout whatever it sends, and no notebook is read for more than
MAX_READ_PER_TURN bytes before the others get a turn. A notebook that timed out while
others ran is retried alone before its timeout is final. Whatever goes wrong with one
job (a malformed message, an exception in the grader) becomes that job's result
(status `error`), never the run's. A fork server that dies is restarted and its
running jobs retried once.

Each notebook has three pipes: its results (frames), its printed output (read and
dropped but for the last bytes: nothing it prints lands on a disk) and the checks'
inputs, which the coordinator writes one check at a time, only after the notebook
reported the end of its last cell, and the next only once the check before is answered.
Frames must follow that order exactly: a frame out of place (a second result for a check,
a cell that is not the next, a result before its inputs) is malformed data, and the
notebook's result is `error` with no points.
Every frame of the notebook's process carries an authentication code made with a key
drawn for this attempt (rnnbook.grading.wire.signer): a frame the notebook's own code
wrote to the pipe (not the runner) is malformed data too.
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
                                      OUTPUT_CAP, OUTPUT_TAIL)
from rnnbook.grading.wire import FrameReader, WireError, decode_value, frame


class Pool:
    """``prepare(job)`` parses the notebook (returns False when it is not runnable and was
    already given its result); ``finish(job, status, reason, final)`` writes the result."""

    def __init__(self, sandbox, jobs, timeout, memory_mb, disk_mb, prepare, finish,
                 restart, bar=None):
        self.sandbox, self.limit = sandbox, jobs
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
            fds = [self.sandbox.sock] + list(self.by_fd)
            out = [j.in_fd for j in self.running.values() if j.outbox and j.in_fd is not None]
            ready, writable, _ = select.select(fds, out, [], max(0.0, wait))
            restart = False
            for r in ready:
                if r is self.sandbox.sock:
                    restart |= self._from_sandbox()
                elif r in self.by_fd:
                    job, kind = self.by_fd[r]
                    self._guard(job, self._drain if kind == "results" else self._drain_output)
            for w in writable:
                job = next((j for j in self.running.values() if j.in_fd == w), None)
                if job is not None:
                    self._guard(job, self._write_inputs)
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
        """Run action(job); any exception becomes the job's `error` result (regraded by
        the next run: it is the grader's failure)."""
        try:
            action(job)
        except Exception as e:
            self._kill(job)
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"rnnbook grade: internal error grading {job.student}/{job.exercise.name}: "
                  f"{type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})",
                  file=sys.stderr)
            self.finish(job, "error", f"the grader failed on this notebook ({type(e).__name__}: "
                        f"{str(e)[:300]}); tell your instructor", final=False)
            job.exited = True
            self.running.setdefault(job.key, job)

    def _start(self, job):
        job.attempts += 1
        job.key = f"{job.id}.{job.attempts}"          # this attempt, in the fork server's messages
        if job.cells is None and not self.prepare(job):
            if self.bar is not None:
                self.bar.update(1)
            return
        job.uid = self.sandbox.job_uid()
        workdir = None
        if not self.sandbox.namespaces:
            job.dir, workdir = self.sandbox.workdir(job.uid)
        secret = os.urandom(32)       # authenticates the runner's frames (rnnbook.grading.wire)
        spec = {"notebook_name": f"{job.exercise.name}.ipynb", "key": secret.hex(),
                "notebook_b64": base64.b64encode(job.data).decode(),
                "workdir": workdir, "memory_mb": self.memory_mb,
                "disk_mb": self.disk_mb, "timeout": self.timeout, "output_cap": OUTPUT_CAP,
                "cells": [{"index": c.index, "number": c.number, "source": c.source}
                          for c in job.run_cells],
                "checks": job.exercise.specs}           # no inputs: they come check by check
        spec_fd = os.memfd_create("rnnbook-job", os.MFD_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        try:
            data = json.dumps(spec).encode()
            del spec
            view = memoryview(data)
            while view:
                view = view[os.write(spec_fd, view):]
            self.sandbox.send({"op": "run", "job": job.key, "uid": job.uid}, [spec_fd, out_w, in_r])
        except BaseException:
            for fd in (out_r, in_w):
                os.close(fd)
            raise
        finally:
            for fd in (spec_fd, out_w, in_r):
                os.close(fd)
        for fd in (out_r, in_w):
            os.set_blocking(fd, False)
        job.out_fd, job.in_fd = out_r, in_w
        self.by_fd[out_r] = (job, "output")
        job.data = None
        job.reader = FrameReader(max_total=MAX_STREAM_BYTES, key=secret)
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
            self.by_fd[job.fd] = (job, "results")
        elif msg.get("op") == "exited":
            for fd in fds:
                os.close(fd)
            job.exited, job.exit_status = True, msg.get("status")
            self._guard(job, self._drain_output)
            self._guard(job, self._drain)
            if not job.finished:
                self.finish(job, None)
        elif msg.get("op") == "failed":
            job.exited = True
            self.finish(job, "error", f"the sandbox could not start it ({str(msg.get('reason'))[:200]})",
                        final=False)
        return False

    def _drain_output(self, job):
        """Read what the notebook printed: counted, the last OUTPUT_TAIL bytes kept."""
        budget = MAX_READ_PER_TURN
        while job.out_fd is not None and budget > 0:
            try:
                data = os.read(job.out_fd, min(1 << 16, budget))
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close(job, "out_fd")
                return
            budget -= len(data)
            job.out_bytes += len(data)
            job.tail += data
            del job.tail[:-OUTPUT_TAIL]

    def _drain(self, job):
        """Read what the notebook has reported so far (at most MAX_READ_PER_TURN bytes)."""
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
        """One frame of the notebook, in the order the runner sends them (else WireError)."""
        op, n_checks, index = msg.get("op"), len(job.exercise.checks), msg.get("index")
        if type(index) is not int and op in ("cell", "check", "rule"):
            raise WireError(f"a {str(op)[:20]} message without a whole-number index")
        cells = job.run_cells
        if op == "cell" and job.phase == "cells" and msg.get("event") == "start" \
                and job.current_cell is None and job.cell_pos < len(cells) \
                and index == cells[job.cell_pos].index:
            job.current_cell = index
        elif op == "cell" and job.phase == "cells" and msg.get("event") == "end" \
                and index == job.current_cell:
            job.current_cell = None
            job.cell_pos += 1
            job.ended.add(index)
            if msg.get("error") is not None:
                info = error_info(msg["error"])
                job.cell_errors[index] = info
                job.memory |= info["memory"]
        elif op == "checks" and job.phase == "cells" and job.current_cell is None \
                and job.cell_pos == len(cells):
            job.phase = "checks"
            self._next_inputs(job)
        elif op == "check" and job.phase == "checks" and index == job.open_check:
            if "error" in msg:
                info = error_info(msg["error"])
                job.received[index] = ("error", info)
                job.memory |= info["memory"]
            else:
                job.received[index] = ("value", decode_value(msg.get("value")))
            job.open_check = None
            self._next_inputs(job)
        elif op == "rule" and job.phase == "checks" and index == job.open_check \
                and isinstance(msg.get("what"), str):
            if len(job.rules.setdefault(index, [])) < 5:
                job.rules[index].append(msg["what"][:500])
        elif op == "stop" and msg.get("reason") == "memory":
            job.memory, job.open_check, job.outbox = True, None, b""     # it stops here
        elif op == "done" and not job.done and job.open_check is None \
                and (job.memory or job.phase == "checks" and job.next_check >= n_checks):
            job.done = True
            if type(msg.get("dropped")) is int:
                job.dropped = msg["dropped"]
        else:
            raise WireError(f"unexpected message {str(op)[:40]!r} (out of order)")

    def _next_inputs(self, job):
        """Queue the next check's inputs (or the end) for the notebook."""
        if job.next_check < len(job.exercise.checks):
            job.open_check = job.next_check
            job.outbox += frame(job.exercise.inputs[job.next_check])
            job.next_check += 1
        else:
            job.outbox += frame({"end": True})
        self._write_inputs(job)

    def _write_inputs(self, job):
        while job.outbox and job.in_fd is not None:
            try:
                n = os.write(job.in_fd, job.outbox[:1 << 16])
            except BlockingIOError:
                return
            except OSError:                     # it exited, or closed its end
                job.outbox = b""
                return
            job.outbox = job.outbox[n:]

    def _deadlines(self):
        now = time.monotonic()
        for job in list(self.running.values()):
            if not job.finished and now > job.deadline:
                self._kill(job)
                if job.crowded and not job.solo:
                    job.finished, job.finished_at, job.status = True, now, "retry"
                else:
                    self.finish(job, "timeout")
            if job.finished:
                self._close(job, "fd")
                self._close(job, "in_fd")
            if job.finished and not job.exited and now - job.finished_at > KILL_GRACE_S:
                job.exited = True                 # its exit was never reported; move on
            if job.finished and job.exited:
                self._close(job, "out_fd")
                del self.running[job.key]
                self._clean(job)
                if job.status == "retry":
                    self.solo.append(job.fresh())
                elif self.bar is not None:
                    self.bar.update(1)

    def _close(self, job, attr):
        fd = getattr(job, attr)
        if fd is not None:
            self.by_fd.pop(fd, None)
            os.close(fd)
            setattr(job, attr, None)

    def _clean(self, job):
        if job.dir:
            shutil.rmtree(job.dir, ignore_errors=True)
        self.sandbox.release(job.uid)

    def _kill(self, job):
        if job.pid is not None and not job.exited:
            try:
                self.sandbox.send({"op": "kill", "job": job.key})
            except OSError:
                pass

    def _restart(self):
        """The fork server died (killed from outside?): start another; retry its jobs once."""
        old = self.sandbox
        self.sandbox = self.restart(old)
        for job in list(self.running.values()):
            for attr in ("fd", "out_fd", "in_fd"):
                self._close(job, attr)
            del self.running[job.key]
            self._clean(job)
            if job.status == "retry":
                self.solo.append(job.fresh())
            elif job.finished:
                if self.bar is not None:
                    self.bar.update(1)
            elif job.attempts >= 2:
                self.finish(job, "error", "the grader's sandbox stopped while this notebook ran",
                            final=False)
            else:
                self.pending.appendleft(job.fresh())

    def finish(self, job, status, reason="", final=True):
        if job.finished:
            return
        job.finished, job.finished_at = True, time.monotonic()
        job.status = self.on_finish(job, status, reason, final)


def error_info(e):
    if not (isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("message"), str)):
        raise WireError("malformed error report")
    tb = e.get("traceback") if isinstance(e.get("traceback"), str) else ""
    return {"type": e["type"][:100], "message": e["message"][:MAX_TEXT],
            "traceback": tb[-MAX_TEXT:], "memory": e.get("memory") is True}
