"""rnnbook grade against a class that attacks it, one test per class of attack (issue 8):
one notebook stopping the run, reading what it must not, data leaving, students
disturbing each other, and hand-written functions that are not.

One grader run grades the whole class (toy exercise, tests/grading_toy.py) with honest
classmates in it; every student's status and score is asserted exactly, the points read
from the checks file. Network attempts only target 127.0.0.1 (listeners of this test).
"""
import csv
import json
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest

import grading_toy as toy
from grading_toy import SOLVED, notebook

from rnnbook.grading.stage import python_paths

TIMEOUT = 5
FORK_NAME = "rnnbook-escape-t"
P, TOTAL = toy.points()
SECRET = "rnnbook-secret-" + secrets.token_hex(8)


def without(*names):
    return TOTAL - sum(P[n] for n in names)


def _spy(targets):
    """A cell that tries each (name, code) and raises RuntimeError("SPY: ...") with
    'blocked NAME' or 'LEAK NAME: what it got' for each."""
    lines = ["import os", "report = []"]
    for name, code in targets:
        lines += ["try:", *("    " + ln for ln in code.split("\n")),
                  f"    report.append('LEAK {name}: ' + repr(got)[:200])",
                  "except BaseException as e:",
                  f"    report.append('blocked {name} (' + type(e).__name__ + ')')"]
    lines.append("raise RuntimeError('SPY: ' + '; '.join(report))")
    return "\n".join(lines)


# The Python environment the sandbox mounts, where it lies below /tmp (a checkout in /tmp, as
# in a fresh-clone CI run): the sandbox must show it, so its parent folders are no leak.
ENV_UNDER_TMP = [p for p in python_paths()[0] if p.startswith("/tmp/")]


def read_targets(tmp):
    subs, out = tmp / "subs", tmp / "out"
    return [
        ("classmate", f"got = open({str(subs / 'honest' / 'toy.ipynb')!r}).read()"),
        ("list_submissions", f"got = os.listdir({str(subs)!r})"),
        ("grades", f"got = os.listdir({str(out)!r})"),
        ("earlier_run", f"got = open({str(tmp / 'earlier' / 'grades.csv')!r}).read()"),
        ("concurrent_run", f"got = os.listdir({str(tmp.parent / 'concurrent')!r})"),
        ("work_dirs", f"import glob\nenv = {ENV_UNDER_TMP!r}\n"
                      "got = glob.glob('/tmp/rnnbook-grade-*') + glob.glob('/tmp/*')\n"
                      "got = [g for g in got if not any(e.startswith(g + '/') for e in env)]\n"
                      "assert got, 'nothing'"),
        ("checks_file", f"got = open({str(toy.FIXTURES / 'toy.checks.py')!r}).read()"),
        ("solutions", f"got = os.listdir({str(toy.ROOT / 'solutions')!r})"),
        ("git", f"got = open({str(toy.ROOT / '.git' / 'HEAD')!r}).read()"),
        ("reference_file", f"got = open({str(toy.ROOT / 'rnnbook' / 'reference.py')!r}).read()"),
        ("reference_module", "from rnnbook import reference\ngot = reference.rnn"),
        ("grader_module", "import rnnbook.grading.grader as got"),
        ("shadow", "got = open('/etc/shadow').read()"),
        ("passwd", "got = open('/etc/passwd').read()"),
        ("environ", "import glob\ngot = [open(p, 'rb').read() for p in glob.glob('/proc/*/environ')]\n"
                    f"assert any(b{SECRET!r} in g for g in got), 'not found'"),
        ("other_jobs", "import glob\ngot = glob.glob('/proc/[0-9]*')\nassert got, 'none'"),
        ("seed", "got = os.environ['RNNBOOK_GRADE_SEED']"),
        ("shared_tmp", f"env = {ENV_UNDER_TMP!r}\ngot = [n for n in os.listdir('/tmp') if not "
                       "any(e.startswith('/tmp/' + n + '/') for e in env)]\nassert got, 'empty'"),
        ("own_folder", "got = sorted(os.listdir('.'))\nassert got != ['tmp', 'toy.ipynb'], 'own files only'"),
        # terminals: the sandbox's devpts is shared by every notebook (one host user)
        ("pty", "m, s = os.openpty()\ngot = os.ttyname(s)"),
        ("dev_pts", "got = os.listdir('/dev/pts')\nassert got, 'empty'"),
    ]


def leave_targets(tmp, tcp, udp, unix):
    marker = tmp / "marker"
    return [
        ("tcp", f"import socket\ngot = socket.create_connection(('127.0.0.1', {tcp}), timeout=2)"),
        ("udp", f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"got = s.sendto(b'x', ('127.0.0.1', {udp}))"),
        ("unix", f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(unix)!r})\ngot = s"),
        ("raw", "import socket\ngot = socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"),
        ("packet", "import socket\ngot = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"),
        ("system", f"import ctypes\ngot = ctypes.CDLL(None).system(b'touch {marker}')\n"
                   f"assert os.path.exists({str(marker)!r}), got"),
        ("subprocess", f"import subprocess\ngot = subprocess.run(['touch', {str(marker)!r}])"),
        ("os_system", f"got = os.system('touch {marker}')\nassert got == 0, got"),
    ]


ESCAPE = f"""import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, b"{FORK_NAME}", 0, 0, 0)
    time.sleep(300)
"""
FORK_BOMB = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nwhile True:\n"
             "    if libc.fork() < 0:\n        raise OSError(ctypes.get_errno(), 'fork refused')")
THREAD_BOMB = ("import threading, time\nthreading.stack_size(1 << 16)\nfor _ in range(100000):\n"
               "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()")
DISK_FILL = ("block = b'x' * (1 << 20)\nwith open('big', 'wb') as f:\n    for _ in range(1000):\n"
             "        f.write(block)")
TMP_FILL = DISK_FILL.replace("'big'", "'/tmp/big'")
MEMFD = "import os\nfd = os.memfd_create('x')"
SHM = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
       "shm = libc.shmget(0, 1 << 30, 0o1600)\nassert shm >= 0, 'shmget refused'\n"
       "libc.shmat.restype = ctypes.c_void_p\nctypes.memset(libc.shmat(shm, None, 0), 1, 1 << 30)")
SPINNER = ("import threading\ndef spin():\n    while True:\n        pass\n"
           "threading.Thread(target=spin, daemon=True).start()\nspin()")
MEMORY_HOG = "hog = []\nwhile True:\n    hog.append(bytearray(1 << 24))"
FLOOD = ("import json, os\nf = json.dumps({'op': 'rule', 'index': 0, 'what': 'x'}).encode()\n"
         "f = (b'%d\\n' % len(f) + f) * 20\nfor _ in range((40 << 20) // len(f)):\n"
         "    os.write(3, f)\nwhile True:\n    pass")          # valid frames, below the 64 MB cap
BAD_FRAMES = "import os\nos.write(3, b'5\\n[1,2]')"
SURROGATE_ERROR = "raise ValueError('bad \\udcff text ' + chr(0xd800))"

# hand-written attacks on square_grad (2 points), tanh_backward (3), Cube (3)
HW = {
    "hw_backward": {"square_grad": "def square_grad(x):\n    t = torch.tensor(x, requires_grad=True)\n"
                                   "    with torch.enable_grad():\n        (t ** 2).sum().backward()\n"
                                   "    return t.grad.numpy()"},
    "hw_importlib": {"square_grad": "def square_grad(x):\n    import importlib\n"
                                    "    th = importlib.import_module('tor' + 'ch')\n"
                                    "    t = th.tensor(x, requires_grad=True)\n"
                                    "    with th.enable_grad():\n"
                                    "        return th.autograd.grad((t ** 2).sum(), t)[0].numpy()"},
    "hw_gc": {"square_grad": "import gc\n_g = next(o for o in gc.get_objects() if callable(o) and "
                             "getattr(o, '__name__', '') == 'grad' and 'autograd' in "
                             "(getattr(o, '__module__', '') or ''))\n\n\ndef square_grad(x):\n"
                             "    t = torch.tensor(x, requires_grad=True)\n    with torch.enable_grad():\n"
                             "        return _g((t ** 2).sum(), t)[0].numpy()"},
    "hw_functional": {"square_grad": "def square_grad(x):\n    from torch.autograd import functional\n"
                                     "    f = lambda t: (t ** 2).sum()\n"
                                     "    return functional.jacobian(f, torch.tensor(x)).numpy()"},
    "hw_thread": {"square_grad": "import threading\n\n\ndef square_grad(x):\n    out = []\n"
                                 "    def work():\n        t = torch.tensor(x, requires_grad=True)\n"
                                 "        (t ** 2).sum().backward()\n        out.append(t.grad.numpy())\n"
                                 "    th = threading.Thread(target=work)\n    th.start()\n    th.join()\n"
                                 "    return out[0]"},
    "hw_blind": {"square_grad": "import sys\n\n\ndef square_grad(x):\n    sys.setprofile(None)\n"
                                "    t = torch.tensor(x, requires_grad=True)\n    with torch.enable_grad():\n"
                                "        return torch.autograd.grad((t ** 2).sum(), t)[0].numpy()"},
    "hw_library": {"square_grad": "def square_grad(x):\n    g = __import__('rnn' + 'book.gradcheck', "
                                  "fromlist=['x'])\n    y = x.copy()\n"
                                  "    return g.numerical_gradient(lambda: np.sum(y ** 2), y)",
                   "tanh": SOLVED["tanh"].split("\n\n\n")[0] + "\n\n\ndef tanh_backward(dh, cache):\n"
                           "    from rnnbook import rnn\n    x, W = cache['x'], cache['W']\n"
                           "    D = W.shape[0]\n    p = {'U': np.zeros((D, D)), 'W': W, 'b': np.zeros(D)}\n"
                           "    _, c = rnn.forward(p, x[None], np.zeros((x.shape[0], D)))\n"
                           "    dx, _, d = rnn.backward(dh[None], c)\n    return dx[0], d['W']"},
    "hw_in_backward": {"cube": SOLVED["cube"].replace(
        "return 3 * x ** 2 * g", "with torch.enable_grad():\n            y = x.detach().requires_grad_()\n"
        "            return torch.autograd.grad((y ** 3 * g).sum(), y)[0]")},
}
HW.update({
    # a value that computes later (outside the watch), or a subclass: only exact types count
    "hw_lazy": {"square_grad": "class Lazy:\n    def __init__(self, x):\n        self.x = x\n\n"
                               "    def __array__(self, dtype=None, copy=None):\n"
                               "        t = torch.tensor(self.x, requires_grad=True)\n"
                               "        with torch.enable_grad():\n            (t ** 2).sum().backward()\n"
                               "        return t.grad.numpy()\n\n\ndef square_grad(x):\n    return Lazy(x)"},
    "hw_subclass": {"square_grad": "class A(np.ndarray):\n    pass\n\n\n"
                                   "def square_grad(x):\n    return (2 * x).view(A)"},
    "hw_partial": {"square_grad": "import functools\n\n\ndef square_grad(x):\n"
                                  "    t = torch.tensor(x, requires_grad=True)\n"
                                  "    with torch.enable_grad():\n        y = (t * t).sum()\n"
                                  "    run = functools.partial(torch.autograd.Variable._execution_engine"
                                  ".run_backward)\n    run((y,), (torch.ones(()),), False, False, (), "
                                  "allow_unreachable=True, accumulate_grad=True)\n    return t.grad.numpy()"},
    "hw_map_thread": {"square_grad": "import _thread, time\n\n\ndef square_grad(x):\n    out = []\n\n"
                                     "    def work():\n        out.append(2 * x)\n"
                                     "    list(map(_thread.start_new_thread, [work], [()]))\n"
                                     "    time.sleep(0.5)\n    return out[0]"},
    "hw_gc_fresh": {"square_grad": "import sys\ndel sys.modules['gc']\nimport gc\n"
                                   "_g = [o for o in gc.get_objects() if getattr(o, '__name__', '') == 'grad']"
                                   "\n\n\n" + SOLVED["square_grad"]},
    # a copy of the library exec'd under another file name; a Jacobian built in the forward
    "hw_copy": {"tanh": SOLVED["tanh"].split("\n\n\n")[0] + "\n\n\nimport inspect\nimport rnnbook.rnn\n"
                        "_ns = {}\nexec(compile(inspect.getsource(rnnbook.rnn), '<mine>', 'exec'), _ns)\n\n\n"
                        "def tanh_backward(dh, cache):\n    x, W = cache['x'], cache['W']\n"
                        "    D = W.shape[0]\n    p = {'U': np.zeros((D, D)), 'W': W, 'b': np.zeros(D)}\n"
                        "    _, c = _ns['forward'](p, x[None], np.zeros((x.shape[0], D)))\n"
                        "    dx, _, d = _ns['backward'](dh[None], c)\n    return dx[0], d['W']"},
    "hw_jac_forward": {"tanh": "def tanh_forward(x, W):\n    xt = torch.tensor(x, requires_grad=True)\n"
                               "    Wt = torch.tensor(W, requires_grad=True)\n    with torch.enable_grad():\n"
                               "        h = torch.tanh(xt @ Wt.T)\n"
                               "    return h.detach().numpy(), {'x': xt, 'W': Wt, 'h': h}\n\n\n"
                               "def tanh_backward(dh, cache):\n    dx, dW = torch.autograd.grad(cache['h'], "
                               "[cache['x'], cache['W']], torch.tensor(dh))\n    return dx.numpy(), dW.numpy()"},
})
HW.update({
    # student code run inside the grader's profile hook: isinstance() reads __class__
    "hw_class": {"square_grad": "class _Box:\n    def __init__(self, f, a):\n"
                                "        self.f, self.a, self.r = f, a, None\n\n    @property\n"
                                "    def __class__(self):\n        if self.r is None:\n"
                                "            self.r = self.f(*self.a)\n        return _Box\n\n\n"
                                "def _grad(x):\n    with torch.inference_mode(False), torch.enable_grad(), "
                                "torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):\n"
                                "        t = torch.tensor(x, requires_grad=True)\n"
                                "        return torch.autograd.grad((t ** 2).sum(), t)[0].numpy()\n\n\n"
                                "def square_grad(x):\n    b = _Box(_grad, (x,))\n    b.__sizeof__()\n"
                                "    return b.r"},
    # the grader's watch replaced from a cell, through a function whose globals are the runner's
    "hw_patch": {"square_grad": "import sys\ntype(sys.stdout).write.__globals__['_watch'] = "
                                "lambda f, *a, **k: f()\n\n\ndef square_grad(x):\n"
                                "    t = torch.tensor(x, requires_grad=True)\n"
                                "    with torch.inference_mode(False), torch.enable_grad():\n"
                                "        (t ** 2).sum().backward()\n    return t.grad.numpy()"},
})
HW_LOST = {"hw_class": ["square_grad"], "hw_patch": ["square_grad"],"hw_backward": ["square_grad"], "hw_importlib": ["square_grad"], "hw_gc": ["square_grad"],
           "hw_functional": ["square_grad"], "hw_thread": ["square_grad"], "hw_blind": ["square_grad"],
           "hw_library": ["square_grad", "tanh_backward"], "hw_in_backward": ["Cube"],
           "hw_lazy": ["square_grad"], "hw_subclass": ["square_grad"], "hw_partial": ["square_grad"],
           "hw_map_thread": ["square_grad"], "hw_gc_fresh": ["square_grad"], "hw_copy": ["tanh_backward"],
           "hw_jac_forward": ["tanh_backward"]}
# lost without a rule broken: refused (gc's lists, a thread) or a value of another type
HW_NO_RULE = {"hw_gc", "hw_gc_fresh", "hw_lazy", "hw_subclass", "hw_map_thread", "hw_class"}
# frames forged or the grader's pipe replaced, from the graded function
FORGE = ("import os, json, base64\n\n\ndef square_grad(x):\n    v = 2 * x\n"
         "    m = json.dumps({'op': 'check', 'index': 0, 'value': {'t': 'array', 'dtype': v.dtype.str, "
         "'shape': list(v.shape), 'data': base64.b64encode(v.tobytes()).decode()}}).encode()\n"
         "    os.write(3, b'%d\\n' % len(m) + m)\n    return v")
DUP_FD3 = "import os\n\n\ndef square_grad(x):\n    r, w = os.pipe()\n    os.dup2(w, 3)\n    return 2 * x"
# the last cell plays the runner's part itself: ends its cell, asks for the checks, answers
# them with autograd, unwatched (fd 3: frames to the grader, fd 4: the checks' inputs)
PROTOCOL = """import io, json, base64
_out, _in = io.FileIO(3, 'wb', closefd=False), io.FileIO(4, 'rb', closefd=False)
_me = len(json.load(open('toy.ipynb'))['cells']) - 1
def _send(m):
    d = json.dumps(m, separators=(',', ':')).encode()
    _out.write(b'%d\\n' % len(d) + d)
_buf = b''
def _recv():
    global _buf
    while b'\\n' not in _buf:
        _buf += _in.read(1 << 16)
    h, _, _buf = _buf.partition(b'\\n')
    while len(_buf) < int(h):
        _buf += _in.read(1 << 16)
    d, _buf = _buf[:int(h)], _buf[int(h):]
    return json.loads(d)
def _dec(v):
    if v['t'] == 'array':
        return np.frombuffer(base64.b64decode(v['data']), v['dtype']).reshape(v['shape']).copy()
    if v['t'] == 'list':
        return [_dec(x) for x in v['items']]
    return None
def _enc(o):
    if isinstance(o, torch.Tensor):
        o = o.detach().numpy()
    if isinstance(o, (np.ndarray, np.generic, float)):
        a = np.ascontiguousarray(o, dtype=np.float64)
        return {'t': 'array', 'dtype': '<f8', 'shape': list(a.shape),
                'data': base64.b64encode(a.tobytes()).decode()}
    if isinstance(o, (tuple, list)):
        return {'t': 'list', 'kind': 'list', 'items': [_enc(x) for x in o]}
    return {'t': 'dict', 'items': [[k, _enc(v)] for k, v in o.items()]}
def _grad(x):
    t = torch.tensor(x, requires_grad=True)
    (t ** 2).sum().backward()
    return t.grad
def _function(F, m):
    xs = [torch.tensor(a, requires_grad=True) for a in _dec(m['args'])]
    out = F.apply(*xs)
    outs, g = (out, _dec(m['grad_output'])) if isinstance(out, tuple) else ((out,), [_dec(m['grad_output'])])
    torch.autograd.backward(outs, [torch.tensor(a) for a in g])
    return {'out': out, 'grads': [t.grad for t in xs]}
_send({'op': 'cell', 'index': _me, 'event': 'end', 'error': None})
_send({'op': 'checks'})
while not (m := _recv()).get('end'):
    k = m['index']
    if k == 0:
        r = _grad(*_dec(m['args']))
    elif k == 1:
        r = tanh_backward(*_dec(m['args']), tanh_forward(*_dec(m['forward_args']))[1])
    elif k in (2, 3):
        r = _function([Cube, SinCos][k - 2], m)
    else:
        r = plain_sum(*_dec(m['args']))
    _send({'op': 'check', 'index': k, 'value': _enc(r)})
_send({'op': 'done', 'dropped': 0})
import time
time.sleep(60)"""


def the_class(tmp, tcp, udp, unix):
    """{student: files} and {student: (status, score)}."""
    honest = notebook()
    subs, expect = {}, {}

    def add(student, nb, status, score, name="toy.ipynb"):
        subs.setdefault(student, {})[name] = nb
        expect[student] = (status, score)

    add("honest", honest, "graded", TOTAL)
    add("honest2", honest, "graded", TOTAL)
    add("stub", toy.exercise(), "graded", 0)
    # 1. one notebook never stops the run
    add("bad_frames", notebook(before=[BAD_FRAMES]), "error", 0)
    add("flood", notebook(before=[FLOOD]), "error", 0)
    add("forge", notebook({"square_grad": FORGE}), "error", 0)
    add("dup_fd3", notebook({"square_grad": DUP_FD3}), "error", 0)
    add("protocol", notebook(after=[PROTOCOL]), "error", 0)
    add("surrogates", _with_surrogate_answer(notebook(after=[SURROGATE_ERROR])), "graded", TOTAL)
    add(b"bad\xffname", honest, "graded", TOTAL)
    add("odd_files", honest, "graded", TOTAL)
    add("long" * 50, honest, "graded", TOTAL)                 # its folder: cut and hashed
    subs["odd_files"][b"\xfe.ipynb"] = honest
    subs["odd_files"][".hidden/toy.ipynb"] = honest
    add("copy_only", honest, "graded", TOTAL, name="toy (1).ipynb")
    add("link_notebook", ("link", "../honest/toy.ipynb"), "invalid", 0)
    add("link_master", ("link", str(tmp / "master.ipynb")), "invalid", 0)
    subs["link_folder"], expect["link_folder"] = ("link", "honest"), ("invalid", 0)
    add("cells_100k", _many_cells(100_000), "invalid", 0)
    add("huge_output", notebook(before=["print('x' * 100_000_000)"]), "graded", TOTAL)
    add("moved_function", notebook({"plain_sum": "# moved to the self-check cell"},
                                   self_check=toy.SELF_CHECK + "\n\n\n" + SOLVED["plain_sum"]),
        "graded", without("plain_sum"))
    # 2. and 3. reading what it must not, and data leaving
    add("spy", notebook(after=[_spy(read_targets(tmp))]), "graded", TOTAL)
    add("exfil", notebook(after=[_spy(leave_targets(tmp, tcp, udp, unix))]), "graded", TOTAL)
    # 4. students disturbing each other
    add("fork_bomb", notebook(before=[FORK_BOMB]), "graded", TOTAL)
    add("escape", notebook(before=[ESCAPE]), "graded", TOTAL)
    add("thread_bomb", notebook(before=[THREAD_BOMB]), "graded", P["plain_sum"])
    add("disk_fill", notebook(before=[DISK_FILL, TMP_FILL]), "graded", TOTAL)
    add("memfd_shm", notebook(before=[MEMFD, SHM]), "graded", TOTAL)
    add("spinner", notebook(before=[SPINNER]), "timeout", 0)
    add("memory_hog", notebook(before=[MEMORY_HOG]), "memory", 0)
    # 5. hand-written functions that are not
    for student, parts in HW.items():
        add(student, notebook(parts), "graded", without(*HW_LOST[student]))
    return subs, expect


def _with_surrogate_answer(nb):
    """The notebook's written answer holds a lone surrogate (JSON's \\udcff escape)."""
    text = nbformat.writes(nb).replace("The derivative of x^2 is 2x.", "2x \\udcff done")
    return text.encode("utf-8")


def _many_cells(n):
    nb = json.loads(nbformat.writes(toy.exercise()))
    nb["cells"] += [{"cell_type": "code", "id": f"x{i}", "metadata": {}, "source": "pass",
                     "outputs": [], "execution_count": None} for i in range(n)]
    return json.dumps(nb).encode()


class Listeners:
    """TCP, UDP and Unix listeners on this machine that record anything they get."""

    def __init__(self, tmp):
        self.got = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = tmp / "listener.sock"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(str(self.unix_path))
        self.unix.listen()
        os.chmod(self.unix_path, 0o777)
        for s in (self.tcp, self.udp, self.unix):
            s.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop:
            for s, kind in ((self.tcp, "tcp"), (self.unix, "unix")):
                try:
                    s.accept()
                    self.got.append(kind)
                except OSError:
                    pass
            try:
                self.udp.recvfrom(100)
                self.got.append("udp")
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        for s in (self.tcp, self.udp, self.unix):
            s.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    toy.need_bwrap()
    tmp = tmp_path_factory.mktemp("attacks")
    options = toy.setup(tmp)
    nbformat.write(notebook(), tmp / "master.ipynb")
    (tmp / "earlier").mkdir()
    (tmp / "earlier" / "grades.csv").write_text("student,exercise,score\nold,toy,11\n")
    concurrent = tmp.parent / "concurrent"
    concurrent.mkdir(exist_ok=True)
    (concurrent / "spec.json").write_text('{"secret": 1}')
    listeners = Listeners(tmp)
    try:
        subs, expect = the_class(tmp, listeners.tcp.getsockname()[1],
                                 listeners.udp.getsockname()[1], listeners.unix_path)
        toy.write_class(tmp / "subs", {k: v for k, v in subs.items() if not isinstance(v, tuple)})
        os.symlink(subs["link_folder"][1], tmp / "subs" / "link_folder")
        start = time.monotonic()
        r = toy.grade(tmp / "subs", tmp / "out", *options, "--jobs", "2", "--timeout", str(TIMEOUT),
                      "--memory-mb", "400", env={"RNNBOOK_GRADE_SEED": toy.SEED,
                                                  "RNNBOOK_TEST_SECRET": SECRET})
        seconds = time.monotonic() - start
    finally:
        listeners.close()
    return {"result": r, "tmp": tmp, "out": tmp / "out", "expect": expect, "seconds": seconds,
            "listened": listeners.got}


def statuses(attacked, students):
    grades, _ = toy.read_grades(attacked["out"])
    got = {s: (grades[(s, "toy")]["status"], float(grades[(s, "toy")]["score"])) for s in students}
    want = {s: (attacked["expect"][s][0], float(attacked["expect"][s][1])) for s in students}
    assert got == want


def spy_report(attacked, student):
    errors = toy.result(attacked["out"], student)["cell_errors"]
    spy = [e["message"] for e in errors if e["message"].startswith("SPY: ")]
    assert spy, errors
    return spy[0]


def test_the_run_finished_and_every_student_has_a_row(attacked):
    r = attacked["result"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "(isolation: namespaces)" in r.stdout
    grades, rows = toy.read_grades(attacked["out"])
    assert {row["student"] for row in rows} == {s if isinstance(s, str) else "bad\\xffname"
                                                for s in attacked["expect"]}
    assert all(toy.result(attacked["out"], "honest")[k] == v for k, v in
               {"status": "graded", "score": TOTAL, "isolation": "namespaces"}.items())


def test_one_notebook_never_stops_the_run(attacked):
    statuses(attacked, ["honest", "honest2", "stub", "bad_frames", "flood", "forge", "dup_fd3", "protocol",
                        "surrogates",
                        "odd_files", "copy_only", "link_notebook", "link_master", "link_folder",
                        "cells_100k", "huge_output"])
    grades, _ = toy.read_grades(attacked["out"])
    assert grades[("bad\\xffname", "toy")]["score"] == str(TOTAL).rstrip("0").rstrip(".")
    out, err = attacked["out"], attacked["result"].stderr
    assert "bad authentication code" in toy.result(out, "protocol")["reason"]
    for student in ("bad_frames", "flood", "forge", "protocol"):  # a frame out of its place
        assert "malformed data" in toy.result(out, student)["reason"], student
    assert "replaced or closed the grader's pipes" in toy.result(out, "dup_fd3")["reason"]
    assert "\\xff" in toy.feedback(out, "surrogates")
    assert "\\xfe.ipynb: not an exercise" in err
    assert "odd_files/.hidden: hidden" in err
    assert "graded as toy" in toy.result(out, "copy_only")["notes"][0]
    for student in ("link_notebook", "link_master", "link_folder"):
        assert "symbolic link" in toy.result(out, student)["reason"]
    assert "more than the 5000 graded" in toy.result(out, "cells_100k")["reason"]
    assert toy.result(out, "huge_output")["output_dropped_chars"] > 90_000_000
    assert "not attempted" in toy.feedback(out, "stub")
    master = toy.feedback(out, "link_master")
    assert "2x" not in master and "derivative" not in master


def test_feedback_names_cells_as_jupyter_and_skipped_cells_only_when_they_matter(attacked):
    statuses(attacked, ["moved_function", "honest"])
    out = attacked["out"]
    moved = toy.feedback(out, "moved_function")
    assert "### Cells the grader did not run" in moved
    assert "- In [3] (`assert np.allclose(square_grad(np.ones(3)), 2)`): a self-check cell: it " \
           "defines `plain_sum`, which a check needs" in moved
    honest = toy.feedback(out, "honest")
    assert "did not run" not in honest and "> The derivative of x^2 is 2x." in honest
    surrogate = toy.result(out, "surrogates")["cell_errors"][0]
    assert surrogate["where"] == "In [8] (`raise ValueError('bad \\udcff text ' + chr(0xd800))`)"


def test_nothing_is_read_that_must_not_be(attacked):
    statuses(attacked, ["spy", "honest"])
    report = spy_report(attacked, "spy")
    assert "LEAK" not in report and "NameError" not in report, report
    for name, _ in read_targets(attacked["tmp"]):
        assert f"blocked {name} " in report, (name, report)
    for path in attacked["out"].rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path


def test_no_data_leaves(attacked):
    statuses(attacked, ["exfil", "honest"])
    report = spy_report(attacked, "exfil")
    assert "LEAK" not in report and "NameError" not in report, report
    for name, _ in leave_targets(attacked["tmp"], 1, 1, "x"):
        assert f"blocked {name} " in report, (name, report)
    assert attacked["listened"] == []
    assert not (attacked["tmp"] / "marker").exists()


def test_students_cannot_disturb_each_other(attacked):
    statuses(attacked, ["fork_bomb", "escape", "thread_bomb", "disk_fill", "memfd_shm", "spinner",
                        "memory_hog", "honest", "honest2"])
    out = attacked["out"]
    errors = {s: [e["message"] for e in toy.result(out, s)["cell_errors"]]
              for s in ("fork_bomb", "escape", "disk_fill", "memfd_shm")}
    assert "[Errno 1] fork refused" in errors["fork_bomb"][0]                  # the kernel
    assert "os.fork: starting programs or processes is not allowed" in errors["escape"][0]
    # (/tmp is the sandbox's read-only folder when the Python environment lies below it)
    assert all("No space left" in m or "File too large" in m
               or (ENV_UNDER_TMP and "Read-only file system" in m)
               for m in errors["disk_fill"]), errors
    assert "Operation not permitted" in errors["memfd_shm"][0] and "shmget refused" in errors["memfd_shm"][1]
    assert "can't start new thread" in toy.result(out, "thread_bomb")["cell_errors"][0]["message"]
    spinner = toy.result(out, "spinner")
    assert spinner["attempts"] == 2 and "also when it ran again alone" in spinner["reason"]
    assert "ran out of memory" in toy.result(out, "memory_hog")["reason"]
    assert not [p for p in Path("/proc").glob("[0-9]*/comm") if _comm(p) == FORK_NAME]


def _comm(path):
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def test_hand_written_rule(attacked):
    statuses(attacked, list(HW) + ["honest"])
    out = attacked["out"]
    for student, lost in HW_LOST.items():
        for check in toy.result(out, student)["checks"]:
            broken = check["name"] in lost and student not in HW_NO_RULE
            assert bool(check["rule"]) == broken, (student, check)
    for student in ("hw_gc", "hw_gc_fresh"):
        assert "gc's object lists are not available while grading" in \
            toy.result(out, student)["cell_errors"][0]["message"], student
    assert "can't start new thread" in toy.result(out, "hw_map_thread")["checks"][0]["message"]
    for student, kind in (("hw_lazy", "Lazy"), ("hw_subclass", "A")):
        assert toy.result(out, student)["checks"][0]["outputs"][0]["message"].startswith(
            f"got a {kind} object, expected an array"), student
    assert "called the library's forward (<mine>), copied" in toy.feedback(out, "hw_copy")
    fb = toy.feedback(out, "hw_library")
    assert "not written by hand, so 0 points: `tanh_backward` called the library's" in fb
    assert re.search(r"`square_grad` called the library's numerical_gradient", fb)
    assert "started a thread" in toy.feedback(out, "hw_thread")
    assert "blind" in toy.feedback(out, "hw_blind")
    assert "left a thread running" in toy.feedback(out, "thread_bomb")


def test_code_that_can_defeat_the_rule_is_flagged_for_review(attacked):
    out = attacked["out"]
    with open(out / "review.csv", newline="", encoding="utf-8") as f:
        flagged = {row["student"] for row in csv.DictReader(f)}
    assert {"forge", "dup_fd3", "protocol", "hw_copy", "hw_partial", "hw_map_thread", "hw_gc",
            "hw_blind"} <= flagged
    assert not flagged & {"honest", "honest2", "stub"}
    assert "### Code your instructor will read" in toy.feedback(out, "hw_copy")
    assert "instructor will read" not in toy.feedback(out, "honest")
    assert len(toy.student_dir(out, "long" * 50).name.encode()) <= 120
