"""The grader's parts on their own: the wire format never trusts the notebook, text that
is not UTF-8 cannot break a report, cell numbers are Jupyter's, the checks API validates,
the hand-written monitor and the seccomp filter do what they say (in this process)."""
import json
import os
import pickle
import platform

import numpy as np
import pytest
import torch

from rnnbook.grading import Check, HandWritten, confine, monitor, wire
from rnnbook.grading.notebooks import parse_notebook, where
from rnnbook.grading.records import CheckResult, Output, Result, safe_name, safe_text
from rnnbook.grading.report import gradescope_results


@pytest.mark.parametrize("data", [
    b"x\n{}", b"99999999999\n", b"5\n[1,2]", b"4\nnull", b"10\n" + b"[" * 10,
    b"20000\n" + b"[" * 20000,
])
def test_frame_reader_rejects_garbage(data):
    with pytest.raises(wire.WireError):
        wire.FrameReader(1 << 20).feed(data)


@pytest.mark.parametrize("node", [
    {"t": "array", "dtype": "|O", "shape": [1], "data": ""},
    {"t": "array", "dtype": "<f8", "shape": [2], "data": "AAAAAAAAAAA="},
    {"t": "array", "dtype": "<f8", "shape": [1 << 30, 1 << 30], "data": ""},
    {"t": "array", "dtype": "<f8", "shape": [-1], "data": ""},
    {"t": "list", "items": [{"t": "none"}] * 1000},
    {"t": "pickle", "data": "gASVAAAAAAAAAAB9lC4="},
    {"t": "int", "v": 2 ** 70}, {"t": "float", "v": "1" * 100}, [],
])
def test_decode_rejects_malformed_values(node):
    with pytest.raises(wire.WireError):
        wire.decode_value(node)


def test_values_round_trip():
    value = (np.arange(6.0).reshape(2, 3), {"U": np.float32(2.5), "n": 3}, [None, True, 1.5, "s"],
             np.array([1, 2], dtype=">i4"), (torch.ones(2), torch.zeros(1)))
    back = wire.decode_value(json.loads(json.dumps(wire.encode_value(value))))
    assert np.array_equal(back[0], value[0]) and back[1]["U"].dtype == np.float32
    assert back[1]["n"] == 3 and back[2] == [None, True, 1.5, "s"]
    assert back[3].tolist() == [1, 2] and back[4][0].tolist() == [1.0, 1.0]


def test_text_that_is_not_utf8_is_shown_escaped():
    name = os.fsdecode(b"stu\xffdent\nx")
    assert safe_name(name) == "stu\\xffdent\\nx"
    assert safe_text("a\ud800b\x1bc\nd") == "a\\ud800b\\x1bc\nd"
    safe_text(name).encode("utf-8")                    # never raises


def test_cell_numbers_are_jupyters():
    nb = {"nbformat": 4, "cells": [
        {"cell_type": "markdown", "source": "# t"}, {"cell_type": "code", "source": "a = 1"},
        {"cell_type": "code", "source": "  \n"}, {"cell_type": "markdown", "source": "x"},
        {"cell_type": "code", "source": ["def f(x):\n", "    return x"]}]}
    cells, error = parse_notebook(json.dumps(nb).encode())
    assert error is None and [c.number for c in cells] == [0, 1, 0, 0, 2]
    assert where(cells[4]) == "In [2] (`def f(x):`)"
    many = {"nbformat": 4, "cells": [{"cell_type": "code", "source": ""}] * 5001}
    assert "more than the 5000 graded" in parse_notebook(json.dumps(many).encode())[1]


def test_checks_api_validates():
    kw = dict(name="f", points=1, function="f", inputs=None, reference=None, outputs={"y": ()})
    assert Check(**kw, hand_written=True).hand_written == HandWritten()
    assert Check(**kw).hand_written is None
    assert HandWritten().forbid == ("autograd", "rnnbook")
    with pytest.raises(ValueError):
        HandWritten(allow=("rnnbook",))                 # a function is named module.function
    with pytest.raises(ValueError):
        Check(**kw, hand_written="yes")
    with pytest.raises(ValueError):
        HandWritten(forbid=("",))


def _watch(fn, rule=None, **kw):
    """(what fn returned or raised, the violations reported), watched in a forked child:
    as in the grader's job process, only one thread runs there (threads this test
    session started, such as tqdm's monitor, would be reported as left running)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                            # the child: one thread
        reports = []
        try:
            value = monitor.watch(fn, rule or {"forbid": ["autograd", "rnnbook"]},
                                  reports.append, **kw)
        except Exception as e:
            value = e
        try:
            data = pickle.dumps((value, reports))
        except Exception:
            data = pickle.dumps((repr(value), reports))
        with os.fdopen(write, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def test_monitor_lets_honest_code_run():
    value, reports = _watch(lambda: 2 * np.ones(3) + torch.ones(3).numpy())
    assert reports == [] and value.tolist() == [3.0, 3.0, 3.0]


def test_monitor_sees_autograd_and_the_library():
    def autograd():
        t = torch.ones(3, requires_grad=True)
        with torch.enable_grad():
            return torch.autograd.grad(t.sum(), t)[0]
    assert "autograd" in _watch(autograd, inference=False)[1][0]
    assert "turned autograd on" in _watch(autograd)[1][0]
    from rnnbook import rnn
    params = {"U": np.eye(2), "W": np.ones((2, 1)), "b": np.zeros(2)}
    run = lambda: rnn.forward(params, np.ones((3, 1, 1)), np.zeros((1, 2)))  # noqa: E731
    assert "called the library's forward" in _watch(run)[1][0]
    allowed = {"forbid": ["autograd", "rnnbook"], "allow": ["rnnbook.rnn.forward"]}
    assert _watch(run, allowed)[1] == []                          # with what it calls inside
    assert _watch(lambda: rnn.backward(np.ones((3, 1, 2)), run()[1]), allowed)[1]
    assert _watch(run, {"forbid": ["autograd"]})[1] == []


def test_seccomp_refuses_processes_programs_and_sockets():
    if platform.machine() != "x86_64":
        pytest.skip("the filter is written for x86-64")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            confine.drop_privileges()
            confine.seccomp()
            got = []
            for name, attempt in (("fork", os.fork), ("exec", lambda: os.execv("/bin/true", ["true"])),
                                  ("inet", lambda: __import__("socket").socket()),
                                  ("memfd", lambda: os.memfd_create("x"))):
                try:
                    attempt()
                    got.append(f"{name} allowed")
                except OSError as e:
                    got.append(f"{name} {e.errno}")
            import socket
            import threading
            socket.socketpair()
            t = threading.Thread(target=lambda: None)
            t.start()
            t.join()
            os.write(w, ", ".join(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    assert got == "fork 1, exec 1, inet 1, memfd 1"


def test_gradescope_output_keeps_indentation_and_says_missing_once():
    tb = "Traceback:\n  File \"<cell 3>\", line 2, in f\n    return 1 / 0"
    graded = Result("s", "ex", "graded", "", 0, 2, [CheckResult(
        "f", "f", 0, 2, "ZeroDivisionError: division by zero\n" + tb, [Output("y", False, "no result")])])
    missing = Result("s", "ex2", "missing", "not submitted", 0, 3,
                     [CheckResult(n, n, 0, 1, "not submitted") for n in "abc"])
    tests = gradescope_results("s", [graded, missing], [])["tests"]
    lines = tests[0]["output"].split("\n")
    assert lines[lines.index("  ```") + 1:lines.index("  ```") + 4] == \
        ["  Traceback:", '    File "<cell 3>", line 2, in f', "      return 1 / 0"]
    assert [t["output"] for t in tests[1:]] == ["**missing:** not submitted"] * 3


def test_untrusted_text_cannot_escape_its_code_block_or_become_a_formula():
    from rnnbook.grading.report import feedback, grades_csv
    message = "boom\n```\n# Full marks\n~~~\n<script>x</script>"
    r = Result("=HYPERLINK(\"x\")", "ex", "error", "", 0, 2, [], cell_errors=[
        {"where": "In [1]", "type": "ValueError`", "message": message, "traceback": ""}])
    md = feedback(r.student, [r], [("`name`", "x")])
    body = md.split("### Problems while running your notebook")[1]
    fences = [ln.strip() for ln in body.split("\n") if ln.strip().startswith(("```", "~~~"))]
    assert fences == ["```", "```"] and "\n# Full marks" not in md    # one block, never closed early
    rows = grades_csv([[r.student, "ex", 0, 2, "error"], ["+1", "@x", "-2", "\tt", "ok"]])
    assert rows.split("\n")[1].startswith("\"'=HYPERLINK(") and "'+1,'@x,'-2" in rows


def test_long_student_names_get_a_short_hashed_folder():
    from rnnbook.grading.records import folder_name
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert folder_name("alice") == "alice"
    assert folder_name(a) != folder_name(b) and len(folder_name("é" * 200).encode()) <= 120


def test_float32_tolerance_only_for_float32_inputs():
    from rnnbook.grading.scoring import compare
    check = Check("c", points=1, function="f", inputs=lambda rng: {"args": []},
                  reference=lambda case: {}, outputs={"y": ()}, tol=1e-10, tol32=1e-5)
    expected = np.linspace(1, 2, 7)                # not exact in float32
    cast = expected.astype(np.float32)                # a float32 answer to float64 inputs
    assert compare(cast, expected, check)[0] is False
    assert compare(cast, expected, check, low_precision=True)[0] is True


def test_scan_flags_what_the_monitor_cannot_see():
    from rnnbook.grading.scan import review
    source = ("import sys, gc, ctypes\nf = sys._getframe(1).f_back\nos.write(3, b'x')\n"
              "exec(src)\nm = __import__('rnn' + 'book')\nx = np.ones(3)  # honest\n")
    cells, _ = parse_notebook(json.dumps({"nbformat": 4, "cells": [
        {"cell_type": "code", "source": source}, {"cell_type": "code", "source": "%time y = 1"}]}).encode())
    got = {(f["line"], f["what"].split(" ")[0]) for f in review(cells)}
    assert got == {(1, "imports"), (2, "sys._getframe"), (2, "a"), (3, "os.write()"),
                   (4, "exec()"), (5, "__import__()")}


def test_frames_are_authenticated_by_the_jobs_key():
    key = os.urandom(32)
    sign, reader = wire.signer(key), wire.FrameReader(1 << 20, key=key)
    assert reader.feed(sign({"op": "checks"}) + sign({"op": "done", "dropped": 0})) == [
        {"op": "checks"}, {"op": "done", "dropped": 0}]
    for forged in (lambda s: wire.frame({"op": "done", "dropped": 0}),    # no code
                   lambda s: wire.signer(os.urandom(32))({"op": "done"}), # another key
                   lambda s: s({"op": "done"})[:-1] + b"x"):              # a changed code
        sign = wire.signer(key)
        with pytest.raises(wire.WireError, match="authentication"):
            wire.FrameReader(1 << 20, key=key).feed(sign({"op": "a"}) + forged(sign))
    replay = wire.FrameReader(1 << 20, key=key)
    first = wire.signer(key)({"op": "a"})
    replay.feed(first)
    with pytest.raises(wire.WireError, match="authentication"):       # numbered: no replay
        replay.feed(first)


class _Sneaky:
    """Runs fn the moment the monitor looks at its class (isinstance) or hashes it."""

    def __init__(self, fn):
        self.fn, self.out = fn, []

    @property
    def __class__(self):
        if not self.out:
            self.out.append(self.fn())
        return _Sneaky


def _autograd_grad():
    t = torch.ones(3, requires_grad=True)
    with torch.inference_mode(False), torch.enable_grad():
        return torch.autograd.grad((t * t).sum(), t)[0]


def test_monitor_runs_no_student_code_inside_its_hooks():
    def class_property():                 # a C call on an object with a __class__ property
        box = _Sneaky(_autograd_grad)
        box.__sizeof__()
        return len(box.out)
    ran, reports = _watch(class_property)
    assert reports or ran == 0, "autograd ran inside the hook, unseen"

    class Name(str):
        def startswith(self, *a):
            return _autograd_grad() is None

        def __hash__(self):
            return _autograd_grad() is None or 1

    def odd_code():
        def f():
            return 1
        g = type(f)(f.__code__.replace(co_filename=Name("x.py"), co_name=Name("f")), {})
        return g()
    assert _watch(odd_code)[1] == []       # nothing of Name ran: no autograd, no error

    def own_hooks():                        # the grader's saved-tensor hooks popped
        top = torch._C._autograd._top_saved_tensors_default_hooks(False)
        torch._C._autograd._pop_saved_tensors_default_hooks()
        torch._C._autograd._push_saved_tensors_default_hooks(*top)
        return 1
    assert "saved-tensor hooks" in _watch(own_hooks)[1][0]

    def patched():                          # the monitor's globals replaced in the window
        monitor._ENGINE = object
        try:
            return _autograd_engine()
        finally:
            monitor._ENGINE = type(torch.autograd.Variable._execution_engine)
    assert "autograd" in _watch(patched, inference=False)[1][0]


def _autograd_engine():
    t = torch.ones(3, requires_grad=True)
    with torch.enable_grad():
        y = (t * t).sum()
    torch.autograd.Variable._execution_engine.run_backward(
        (y,), (torch.ones(()),), False, False, (), allow_unreachable=True, accumulate_grad=True)
    return t.grad


def test_monitor_keeps_gc_collections_off_in_the_window():
    import gc
    value, reports = _watch(lambda: gc.isenabled())
    assert value is False and reports == []
    assert "gc.enable" in _watch(lambda: gc.enable())[1][0]


def test_seccomp_refuses_kernel_memory_hoarding():
    if platform.machine() != "x86_64":
        pytest.skip("the filter is written for x86-64")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            import array
            import fcntl
            import socket
            confine.drop_privileges()
            confine.seccomp()
            a, b = socket.socketpair()
            got = []
            for name, attempt in (
                    ("pipe_size", lambda: fcntl.fcntl(w, 1031, 1 << 20)),            # F_SETPIPE_SZ
                    ("sndbuf", lambda: a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)),
                    ("rcvbuf", lambda: a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)),
                    ("rights", lambda: a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                          array.array("i", [b.fileno()]))]))):
                try:
                    attempt()
                    got.append(f"{name} allowed")
                except OSError as e:
                    got.append(f"{name} {e.errno}")
            a.send(b"still works")
            got.append(b.recv(100).decode())
            fcntl.fcntl(w, fcntl.F_GETFL)
            os.write(w, ", ".join(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    assert got == "pipe_size 1, sndbuf 1, rcvbuf 1, rights 1, still works"


def test_scan_flags_ways_to_the_graders_pipes():
    from rnnbook.grading.scan import review
    lines = ["import io", "out = io.FileIO(3, 'wb', closefd=False)", "from os import write as w",
             "f = os.fdopen(n, 'rb')", "s = socket.fromfd(3, 1, 1)", "g = open(n, 'wb', closefd=False)",
             "with open(path) as h:\n    text = h.read()", "from io import FileIO"]
    cells, _ = parse_notebook(json.dumps({"nbformat": 4, "cells": [
        {"cell_type": "code", "source": "\n".join(lines)}]}).encode())
    assert sorted({f["line"] for f in review(cells)}) == [2, 3, 4, 5, 6, 9]


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/mountinfo")
def test_mounts_below_lists_nested_mount_points():
    """private_filesystem keeps /tmp when the Python environment is mounted below it (a
    checkout in /tmp): it asks _mounts_below, which must see nested mount points."""
    below = confine._mounts_below("/")
    assert "/proc" in below and "/" not in below
    assert confine._mounts_below("/no/such/folder") == []
