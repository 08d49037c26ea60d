"""The checks API that chapters import, and loading an exercise's checks.

Each exercise declares its graded checks in solutions/<exercise>.checks.py, a list
``CHECKS`` of ``Check``, imported as ``from rnnbook.grading import Check`` (and
``HandWritten``). The grader draws each check's inputs from a secret seed and computes
its reference, in the coordinator's process only (``prepare``).
"""
import dataclasses
import hashlib
import importlib.util
import sys
import zlib
from pathlib import Path
from typing import Callable

from rnnbook.grading.defaults import SKIP_TAGS


class UsageError(Exception):
    """A mistake of the instructor's (a missing folder, a bad option, a broken checks file)."""


@dataclasses.dataclass(frozen=True)
class HandWritten:
    """What a check's function must do without: it has to compute its result by hand.

    forbid -- what the student's code may not run while the grader calls the function:
              "autograd"     torch's automatic differentiation: the autograd engine (any
                             route to backward() or torch.autograd.grad), forward-mode AD,
                             torch.func, torch.fx, torch.jit, torch.compile; with
                             call="function" or "backward" the call also runs under
                             torch.inference_mode. Plain tensor operations stay allowed.
              "rnnbook"      every module of the library (rnnbook.rnn, rnnbook.gradcheck,
                             rnnbook.rnn_torch, ...)
              "rnnbook.rnn"  (any module name) every function of that module
    allow  -- functions allowed although their module is forbidden, with what they call
              inside the library, e.g. ("rnnbook.rnn.forward",)

    However the code reaches them (an import, importlib, ``__import__`` of a computed name,
    gc, a module the sandbox imported before) does not matter: the grader watches what runs
    during the call. With call="autograd" (a torch.autograd.Function) the grader's own
    backward() of the output is allowed; the Function's forward and backward run under
    the rule, so they may use tensor operations but not autograd. A check that breaks
    the rule scores 0 and its feedback says what was used.
    """
    forbid: tuple = ("autograd", "rnnbook")
    allow: tuple = ()

    def __post_init__(self):
        for name in tuple(self.forbid) + tuple(self.allow):
            if not isinstance(name, str) or not name or name != name.strip():
                raise ValueError(f"HandWritten: {name!r} is not a module or function name")
        for name in self.allow:
            if "." not in name:
                raise ValueError(f"HandWritten: allow={name!r} must name a function, "
                                 "e.g. 'rnnbook.rnn.forward'")
        object.__setattr__(self, "forbid", tuple(self.forbid))
        object.__setattr__(self, "allow", tuple(self.allow))

    def as_rule(self):
        return {"forbid": list(self.forbid), "allow": list(self.allow)}


@dataclasses.dataclass(frozen=True)
class Check:
    """One graded check of an exercise, declared in solutions/<exercise>.checks.py.

    name      -- what the student's feedback calls it, e.g. "jordan_backward"
    points    -- split equally over ``outputs``; each output passes or fails on its own
    function  -- the name of the student's function (or class, for call="autograd")
    inputs    -- inputs(rng) -> dict with "args" (positional arguments; with call="backward"
                 the ones before the cache) and anything ``reference`` needs, plus
                 "forward_args" for call="backward" and "grad_output" for call="autograd"
                 (a list of arrays, one per output, when apply returns a tuple)
                 Runs in the grader only; rng comes from the secret seed. Keep sizes small.
    reference -- reference(case) -> {output name: expected array}, in the grader only:
                 rnnbook, or torch autograd in float64
    outputs   -- {output name: path into the return value}; a path is a tuple of indices
                 and dict keys, () for the value itself. With call="autograd" the value is
                 {"out": the forward's output (a tuple if it returns several),
                 "grads": [the gradient of each arg]}, e.g. ("out", 1) or ("grads", 0).
    call      -- "function": function(*args)
                 "backward": _, cache = forward(*forward_args); function(*args, cache)
                 "autograd": function.apply(*args as tensors requiring grad), then
                             backward(grad_output) of its output
    forward   -- with call="backward", the forward function the exercise provides
    tol, tol32 -- largest relative error (rnnbook.gradcheck.rel_error) that passes: tol32
                 when the check's inputs hold float32 (or float16) arrays, else tol (then
                 a result cast to float32 fails as any answer that far off would)
    hand_written -- None, or a HandWritten (True means HandWritten(): no autograd and no
                 rnnbook): the function must be written by hand; see HandWritten
    """
    name: str
    points: float
    function: str
    inputs: Callable
    reference: Callable
    outputs: dict
    call: str = "function"
    forward: str = None
    tol: float = 1e-7
    tol32: float = 1e-4
    hand_written: HandWritten = None

    def __post_init__(self):
        if self.call not in ("function", "backward", "autograd"):
            raise ValueError(f"check {self.name!r}: call must be function, backward or autograd")
        if self.call == "backward" and not self.forward:
            raise ValueError(f"check {self.name!r}: call='backward' needs forward=")
        if not (self.points > 0 and self.outputs):
            raise ValueError(f"check {self.name!r}: needs points > 0 and at least one output")
        rule = self.hand_written
        if rule is True:
            rule = HandWritten()
        elif rule is False:
            rule = None
        if rule is not None and not isinstance(rule, HandWritten):
            raise ValueError(f"check {self.name!r}: hand_written must be True or a HandWritten")
        object.__setattr__(self, "hand_written", rule)


def load_checks(path):
    """The list CHECKS of a checks file, loaded by path (grader process only)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"rnnbook_checks_{path.stem.split('.')[0]}", path)
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True   # no __pycache__ in solutions/
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"{path}: {type(e).__name__}: {e}") from e
    finally:
        sys.dont_write_bytecode = dont_write
    checks = getattr(module, "CHECKS", None)
    if not isinstance(checks, list) or not checks or not all(isinstance(c, Check) for c in checks):
        raise UsageError(f"{path}: must define CHECKS, a non-empty list of rnnbook.grading.Check")
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: two checks have the same name")
    return checks


@dataclasses.dataclass
class Exercise:
    name: str                    # file name without .ipynb
    checks: list
    checks_sha256: str
    skip_sources: dict           # stripped source of the exercise's skipped cells -> tag
    answer_ids: set
    answer_prompts: set          # the text of the exercise's empty answer cells
    specs: list = None           # what the child receives of each check before it runs
    inputs: list = None          # each check's inputs (sent to the child when it runs)
    expected: list = None        # reference outputs of each check
    low_precision: list = None   # whether each check's inputs are float32/float16

    @property
    def max_score(self):
        return sum(c.points for c in self.checks)


def exercise_files(exercises_dir, checks_dir):
    """The exercises' names and the sha256 of each checks file (nothing imported)."""
    exercises_dir, checks_dir = Path(exercises_dir), Path(checks_dir)
    if not exercises_dir.is_dir():
        raise UsageError(f"no exercises folder {exercises_dir} (pass --exercises)")
    names = sorted(p.stem for p in exercises_dir.glob("*.ipynb"))
    if not names:
        raise UsageError(f"no exercise notebooks in {exercises_dir}/")
    sha = {}
    for name in names:
        path = checks_dir / f"{name}.checks.py"
        if not path.is_file():
            raise UsageError(f"{path} is missing: every exercise declares its graded "
                             "checks there (see rnnbook/grading/checks.py)")
        sha[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return names, sha


def load_exercises(exercises_dir, checks_dir, names=None):
    """Every exercise notebook of exercises_dir (or only ``names``) with its checks."""
    from rnnbook.grading.notebooks import parse_notebook
    exercises_dir, checks_dir = Path(exercises_dir), Path(checks_dir)
    if not exercises_dir.is_dir():
        raise UsageError(f"no exercises folder {exercises_dir} (pass --exercises)")
    paths = sorted(p for p in exercises_dir.glob("*.ipynb") if names is None or p.stem in names)
    if not paths:
        raise UsageError(f"no exercise notebooks in {exercises_dir}/")
    out = []
    for p in paths:
        checks_path = checks_dir / f"{p.stem}.checks.py"
        if not checks_path.is_file():
            raise UsageError(f"{checks_path} is missing: every exercise declares its graded "
                             "checks there (see rnnbook/grading/checks.py)")
        cells, error = parse_notebook(p.read_bytes())
        if error:
            raise UsageError(f"{p}: {error}")
        skip = {c.source.strip(): t for c in cells if c.type == "code"
                for t in SKIP_TAGS if t in c.tags}
        out.append(Exercise(p.stem, load_checks(checks_path),
                            hashlib.sha256(checks_path.read_bytes()).hexdigest(), skip,
                            {c.id for c in cells if "answer" in c.tags and c.id},
                            {c.source.strip() for c in cells if "answer" in c.tags}))
    return out


def prepare(exercise, seed):
    """Draw each check's inputs from the seed and compute its reference (grader only)."""
    import numpy as np
    from rnnbook.grading.wire import encode_value
    exercise.specs, exercise.inputs, exercise.expected, exercise.low_precision = [], [], [], []
    for k, check in enumerate(exercise.checks):
        rng = np.random.default_rng([seed, zlib.crc32(exercise.name.encode()), k])
        where = f"{exercise.name}.checks.py, check {check.name!r}"
        try:
            case = check.inputs(rng)
            expected = check.reference(case)
        except Exception as e:
            raise UsageError(f"{where}: {type(e).__name__}: {e}") from e
        if not isinstance(expected, dict) or set(expected) != set(check.outputs):
            raise UsageError(f"{where}: reference must return a dict with keys "
                             f"{sorted(check.outputs)}")
        expected = {k2: np.asarray(v, dtype=np.float64) for k2, v in expected.items()}
        if not all(np.all(np.isfinite(v)) for v in expected.values()):
            raise UsageError(f"{where}: the reference is not finite")
        inputs = {"index": k, "args": encode_value(list(case["args"]))}
        given = [case["args"]]
        if check.call == "backward":
            inputs["forward_args"] = encode_value(list(case["forward_args"]))
            given.append(case["forward_args"])
        if check.call == "autograd":
            inputs["grad_output"] = encode_value(case["grad_output"])
            given.append(case["grad_output"])
        exercise.specs.append({"name": check.name, "function": check.function, "call": check.call,
                               "forward": check.forward,
                               "hand_written": check.hand_written.as_rule() if check.hand_written else None})
        exercise.inputs.append(inputs)
        exercise.expected.append(expected)
        exercise.low_precision.append(_low_precision(given))


def _low_precision(value):
    """Whether a check's inputs hold a float32 or float16 array (or tensor)."""
    import numpy as np
    if isinstance(value, (list, tuple)):
        return any(_low_precision(v) for v in value)
    if isinstance(value, dict):
        return any(_low_precision(v) for v in value.values())
    dtype = getattr(value, "dtype", None)
    return dtype is not None and str(dtype).replace("torch.", "") in ("float32", "float16")
