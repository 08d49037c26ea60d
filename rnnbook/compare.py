"""Chapter 06, GRU or LSTM? (the extra exercise 6-1P): the cells compared by experiment,
with the book's own NumPy cells. Counting, one training run, the grid, and a speed
measurement against torch.

    python -m rnnbook.compare grid [--jobs 2] [--out PATH] [--limit K] [--dry-run]
        every configuration of ``configs()`` (tasks x lengths x models x sizings x
        seeds, plus a sweep of state sizes), one JSON row per run in
        book/data/06_gru_or_lstm.jsonl, through ``rnnbook.experiments.run_grid``:
        a tqdm bar, ``--jobs`` processes with one BLAS thread each, rows appended
        atomically, resumable, sorted when complete
    python -m rnnbook.compare speed [--out PATH] [--repeat 5]
        time per training step of the NumPy cells at several lengths, and the same
        training with torch.nn modules (float64 and float32, one thread), written to
        book/data/06_speed.json

The models (``MODELS``): the simple RNN, the LSTM with forget-gate bias 0 and 1, and
the GRU with the reset gate before and after the product (chapters 01, 04, 05). Every
model reads the last state (or every state, for the copy task) with a linear head
``out = V h + c`` and is trained by ``rnnbook.train.fit``: Adam, one learning rate for
all, gradient-norm clipping, a fresh batch at every step. Initialisation: weights
uniform in (-1/sqrt(D), 1/sqrt(D)) (torch's), biases zero, except the LSTM's forget
bias b_f (0 or 1); the head as ``train.init_head``.

Counting (``n_params``, ``gemm_flops``, ``matched_size``) follows the cells' own
parameter dicts: G blocks of W (D, M), U (D, D), b (D,), G = 1 (RNN), 4 (LSTM),
3 (GRU), and the GRU "after" has one more bias b_hn (D,); the head has K (D + 1).
FLOPs count the matrix products only (a multiply-add is 2 FLOPs): the forward's
2 T N G D (M + D), the backward's dW, dU, dx and dh products twice that, plus the
head's; the elementwise work (gates, tanh) is O(T N D) and left out.
"""
import os

if __name__ == "__main__":   # one BLAS thread per process, before NumPy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rnnbook import experiments, gru, lstm, rnn, tasks, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data"
GRID_PATH = DATA / "06_gru_or_lstm.jsonl"
META_PATH = DATA / "06_gru_or_lstm.meta.json"
SPEED_PATH = DATA / "06_speed.json"

# model -> (cell module, gate blocks G, extra biases, cell kwargs, LSTM forget bias)
_MODELS = {
    "rnn": (rnn, 1, 0, {}, None),
    "lstm-b0": (lstm, 4, 0, {}, 0.0),
    "lstm-b1": (lstm, 4, 0, {}, 1.0),
    "gru-before": (gru, 3, 0, {"reset": "before"}, None),
    "gru-after": (gru, 3, 1, {"reset": "after"}, None),
}
MODELS = tuple(_MODELS)
LABELS = {"rnn": "simple RNN", "lstm-b0": "LSTM, b_f = 0", "lstm-b1": "LSTM, b_f = 1",
          "gru-before": "GRU, reset before", "gru-after": "GRU, reset after"}

# task -> input size M, outputs K, loss, which states the head reads
TASKS = {
    "digit_sum": {"M": 10, "K": tasks.DIGIT_CLASSES, "loss": "cross_entropy",
                  "where": "last"},
    "adding": {"M": 2, "K": 1, "loss": "mse", "where": "last"},
    "copy": {"M": 10, "K": 9, "loss": "cross_entropy", "where": "all"},
}
COPY_LENGTH, COPY_SYMBOLS = 5, 8     # the copy task: 5 symbols out of 8 (M = 8 + 2)

# The experiment's fixed choices (chapter 06 explains them).
N, D_HIDDEN, LR, CLIP = 32, 32, 1e-2, 1.0
LENGTHS = {"digit_sum": (10, 20, 35, 50), "adding": (25, 50, 100), "copy": (12, 20, 30)}
STEPS = 1500
SEEDS = (0, 1, 2)
SWEEP = {"task": "digit_sum", "T": 10, "D": (8, 16, 64)}   # D = 32 is in the main grid
LONG = {"task": "digit_sum", "T": 20, "steps": 6000}       # four times the budget
THRESHOLD = 0.1      # "solved": loss at most a tenth of the memoryless baseline's
WINDOW = 50          # steps to threshold: first step whose trailing mean passes it
BLOCK = 25           # learning curves: mean training loss per block of 25 steps
N_TEST, TEST_CHUNK = 1000, 250


def _model(model):
    if model not in _MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return _MODELS[model]


def _size(name, value, low=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


# ---- counting -------------------------------------------------------------------------

def n_params(model, M, D, K=0):
    """Number of trainable parameters of ``model`` with input size M and state size D,
    plus a linear head with K outputs (K (D + 1); K = 0: the cell alone).

    G blocks of W (D, M), U (D, D), b (D,): G (D M + D^2 + D), plus D for the GRU
    "after"'s b_hn. Equals the total size of the cell's params dict."""
    _, G, extra, _, _ = _model(model)
    M, D, K = _size("M", M), _size("D", D), _size("K", K, 0)
    return G * (D * M + D * D + D) + extra * D + K * (D + 1)


def gemm_flops(model, T, N, M, D, K=0, where="last"):
    """FLOPs of the matrix products of one training step (forward and backward) on a
    batch of N sequences of length T, with a head of K outputs reading the last state
    (``where="last"``) or every state (``"all"``). A multiply-add counts 2.

    Returns {"forward": 2 T N G D (M + D) + head, "backward": twice the forward
    (dW, dx from the input products; dU, dh from the recurrent ones), "total"}."""
    _, G, _, _, _ = _model(model)
    T, N, M, D = (_size(n, v) for n, v in (("T", T), ("N", N), ("M", M), ("D", D)))
    K = _size("K", K, 0)
    if where not in ("last", "all"):
        raise ValueError(f"where must be 'last' or 'all', got {where!r}")
    read = N * (T if where == "all" else 1)       # states the head reads
    forward = 2 * T * N * G * D * (M + D) + 2 * read * K * D
    backward = 2 * forward                       # two products per forward product
    return {"forward": forward, "backward": backward, "total": forward + backward}


def matched_size(model, M, budget, K=0):
    """The state size D whose parameter count (``n_params(model, M, D, K)``) is closest
    to ``budget`` (the smaller D on a tie)."""
    M, budget, K = _size("M", M), _size("budget", budget), _size("K", K, 0)
    _model(model)
    best = 1
    for D in range(1, 4097):
        if abs(n_params(model, M, D, K) - budget) < abs(n_params(model, M, best, K)
                                                        - budget):
            best = D
        if n_params(model, M, D, K) > budget:
            break
    return best


def cache_floats_per_step(model, M=10, D=32, N=4):
    """Floats the cell's forward keeps for the backward, per time step and sequence,
    measured on the cache itself: (bytes at T = 20 - bytes at T = 10) / (10 N 8)."""
    cell, _, _, kwargs, _ = _model(model)
    sizes = []
    for T in (10, 20):
        rng = np.random.default_rng(0)
        params = init_model(model, M, D, rng)
        x = rng.normal(size=(T, N, M))
        states = [np.zeros((N, D))] * (2 if cell is lstm else 1)
        _, cache = cell.forward(params, x, *states, **kwargs)
        sizes.append(sum(v.nbytes for v in cache.values() if isinstance(v, np.ndarray)))
    return (sizes[1] - sizes[0]) / (10 * N * 8)


STRUCTURE = {   # what each cell is made of: the equations of chapters 01, 04, 05
    "rnn": {"gates": "none", "state": "h", "sigmoids": 0, "tanhs": 1},
    "lstm-b1": {"gates": "i, f, o", "state": "h, c", "sigmoids": 3, "tanhs": 2},
    "gru-before": {"gates": "z, r", "state": "h", "sigmoids": 2, "tanhs": 1},
    "gru-after": {"gates": "z, r", "state": "h", "sigmoids": 2, "tanhs": 1},
}


def structure_table(M=10, D=32):
    """One dict per cell (simple RNN, LSTM, both GRUs): gates, state, parameters of the
    cell at (M, D), GEMM FLOPs per time step and sequence (forward + backward, no
    head), sigmoid and tanh evaluations per unit and step, and the floats kept for
    BPTT per step and sequence (measured)."""
    rows = []
    names = {"rnn": "simple RNN", "lstm-b1": "LSTM", "gru-before": "GRU (reset before)",
             "gru-after": "GRU (reset after)"}
    for model, what in STRUCTURE.items():
        state_floats = D * (2 if _model(model)[0] is lstm else 1)
        rows.append({
            "cell": names[model], "model": model,
            **what,
            "state floats": state_floats,
            "blocks G": _model(model)[1],
            "params": n_params(model, M, D),
            "params / RNN": n_params(model, M, D) / n_params("rnn", M, D),
            "FLOPs/step": gemm_flops(model, 1, 1, M, D)["total"],
            "cache floats/step": cache_floats_per_step(model, M, D),
        })
    return rows


# ---- one training run -----------------------------------------------------------------

def init_model(model, M, D, rng):
    """Initial parameters: weights uniform in (-1/sqrt(D), 1/sqrt(D)), biases zero, the
    LSTM's forget bias b_f = 0 or 1 (``lstm.init``)."""
    cell, _, _, kwargs, forget_bias = _model(model)
    if cell is lstm:
        return lstm.init(M, D, rng, forget_bias=forget_bias)
    spec = gru.PARAMS_AFTER if kwargs.get("reset") == "after" else \
        (gru.PARAMS if cell is gru else rnn.PARAMS)
    params = train.init_params(spec, M, D, rng)
    return {k: (np.zeros_like(v) if v.ndim == 1 else v) for k, v in params.items()}


def make_task(task, T, N):
    """task(rng) -> one batch (x, y) of ``task`` with length T and N sequences."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    if task == "copy":
        return functools.partial(tasks.copy, T=T, N=N, length=COPY_LENGTH,
                                 symbols=COPY_SYMBOLS)
    return functools.partial(getattr(tasks, task), T=T, N=N)


def baseline_loss(task, T):
    """The loss of the best answer without memory: 1/6 (adding, predict the mean), the
    entropy of the sum's prior (digit_sum), length log(symbols) / T per step (copy)."""
    if task == "adding":
        return tasks.ADDING_BASELINE_MSE
    if task == "digit_sum":
        return tasks.digit_sum_baseline()["cross_entropy"]
    return tasks.copy_baseline(T, COPY_LENGTH, COPY_SYMBOLS)


def chance_metric(task):
    """The test metric of the memoryless answer: accuracy 0.1 (digit_sum: always 9),
    1/8 (copy: a uniform guess of the recalled symbol), MSE 1/6 (adding)."""
    return {"digit_sum": tasks.digit_sum_baseline()["accuracy"],
            "copy": 1.0 / COPY_SYMBOLS, "adding": tasks.ADDING_BASELINE_MSE}[task]


METRICS = {"digit_sum": "accuracy", "adding": "MSE", "copy": "recall accuracy"}


def held_out(task, T):
    """The fixed test set of ``task`` at length T: N_TEST sequences from a seed that no
    training run uses."""
    seed = [7919, list(TASKS).index(task), T]
    return make_task(task, T, N_TEST)(np.random.default_rng(seed))


def evaluate(model, params, head, task, T):
    """Test loss and metric (``METRICS[task]``) on ``held_out(task, T)``, computed
    in chunks of TEST_CHUNK sequences (bounded memory)."""
    cell, _, _, kwargs, _ = _model(model)
    spec = TASKS[task]
    x, y = held_out(task, T)
    D = head["V"].shape[1]
    losses, correct, count = [], 0.0, 0
    for start in range(0, N_TEST, TEST_CHUNK):
        xs = x[:, start:start + TEST_CHUNK]
        ys = y[start:start + TEST_CHUNK] if y.ndim == 1 or task == "adding" \
            else y[:, start:start + TEST_CHUNK]
        n = xs.shape[1]
        states = [np.zeros((n, D))] * (2 if cell is lstm else 1)
        hs, _ = cell.forward(params, xs, *states, **kwargs)
        loss, _, _, out = train.head_loss(head, hs, ys, spec["loss"], spec["where"])
        losses.append(loss * n)
        if task == "digit_sum":
            correct += np.sum(out.argmax(axis=-1) == ys)
            count += n
        elif task == "copy":
            recall = slice(T - COPY_LENGTH, T)
            correct += np.sum(out[recall].argmax(axis=-1) == ys[recall])
            count += COPY_LENGTH * n
    loss = float(np.sum(losses) / N_TEST)
    return {"loss": loss, "metric": loss if task == "adding" else float(correct / count)}


def digit_sum_sequences(T):
    """How many different input sequences ``tasks.digit_sum`` can draw at length T:
    100 pairs of leading digits, times the distractor's T - 2 positions and 10
    values, where every position's 0 gives the same all-zero tail (1 + 9 (T - 2))."""
    T = _size("T", T, 3)
    return 100 * (1 + 9 * (T - 2))


def digit_sum_coverage(T, seed=0, steps=STEPS):
    """What a grid run at length T with ``seed`` trains on, against the test set:
    {"possible": digit_sum_sequences(T), "drawn": steps * N sequences,
     "distinct": how many of them differ, "test_seen": the share of the
     sequences of ``held_out("digit_sum", T)`` that occur among them}. The batches
    are regenerated exactly as ``train.fit`` draws them (default_rng(seed), one
    ``tasks.digit_sum`` call per step)."""
    T, steps = _size("T", T, 3), _size("steps", steps)
    rng = np.random.default_rng(_size("seed", seed, 0))
    draw = make_task("digit_sum", T, N)
    seen = set()
    for _ in range(steps):
        x, _ = draw(rng)
        seen.update(map(bytes, x.argmax(axis=-1).T.astype(np.int8)))
    x, _ = held_out("digit_sum", T)
    test = [bytes(row) for row in x.argmax(axis=-1).T.astype(np.int8)]
    return {"possible": digit_sum_sequences(T), "drawn": steps * N,
            "distinct": len(seen),
            "test_seen": sum(t in seen for t in test) / len(test)}


def steps_to_threshold(loss, threshold, window=WINDOW):
    """The first step s (1-based count of updates) at which the mean training loss of
    steps s - window + 1 .. s is at most ``threshold``; None if it never is."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.size < window:
        return None
    means = np.convolve(loss, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(np.isfinite(means) & (means <= threshold))
    return int(hit[0] + window) if hit.size else None


def train_model(config, nudge=0.0):
    """Train one configuration; returns fit's Result. The cell's parameters come from
    default_rng([seed, 0]), the head's from default_rng([seed, 1]) and the batches from
    fit's seed: every model with the same seed sees the same batches. ``nudge``
    multiplies the cell's initial parameters by 1 + nudge (chapter 06 shows what a
    nudge of 1e-13 does)."""
    model, task, T = config["model"], config["task"], config["T"]
    spec = TASKS[task]
    cell, _, _, kwargs, _ = _model(model)
    D, seed = config["D"], config["seed"]
    params = init_model(model, spec["M"], D, np.random.default_rng([seed, 0]))
    if nudge:
        params = {k: v * (1.0 + nudge) for k, v in params.items()}
    head = train.init_head(D, spec["K"], np.random.default_rng([seed, 1]))
    return train.fit(cell, params, make_task(task, T, config["N"]), config["steps"],
                     lr=config["lr"], optimizer="adam", loss=spec["loss"],
                     where=spec["where"], head=head, clip=config["clip"], seed=seed,
                     cell_kwargs=kwargs, progress=False)


def run(config):
    """One row's result (deterministic: no clock). Final numbers are measured on the
    fixed test set; ``steps_to_threshold`` on the training losses (fresh batches)."""
    task, T, model = config["task"], config["T"], config["model"]
    spec = TASKS[task]
    result = train_model(config)
    base = baseline_loss(task, T)
    threshold = THRESHOLD * base
    if result.diverged_at is None:
        test = evaluate(model, result.params, result.head, task, T)
    else:
        test = {"loss": math.nan, "metric": math.nan}
    loss = result.history["loss"]
    return {
        "n_params": n_params(model, spec["M"], config["D"], spec["K"]),
        "baseline_loss": experiments.significant([base])[0],
        "threshold": experiments.significant([threshold])[0],
        "test_loss": experiments.significant([test["loss"]])[0],
        "test_metric": experiments.significant([test["metric"]])[0],
        "metric": METRICS[task],
        "solved": bool(test["loss"] <= threshold),
        "steps_to_threshold": steps_to_threshold(loss, threshold),
        "final_train_loss": experiments.significant([np.mean(loss[-100:])])[0],
        "diverged_at": result.diverged_at,
        "block": BLOCK,
        "loss_curve": experiments.significant(experiments.block_reduce(loss, BLOCK, "mean")),
    }


# ---- the grid -------------------------------------------------------------------------

def _config(task, T, model, sizing, D, seed, steps=STEPS):
    return {"task": task, "T": T, "model": model, "sizing": sizing, "D": D, "N": N,
            "steps": steps, "lr": LR, "clip": CLIP, "seed": seed}


def configs():
    """The grid. For every task and length: the two LSTMs at D = D_HIDDEN; the simple
    RNN and both GRUs at the same D ("hidden") and at the D whose parameter count is
    closest to the LSTM's ("params"); three seeds each, STEPS steps. Then the sweep:
    every model at the length SWEEP["T"] and the state sizes SWEEP["D"] ("sweep"); and
    every model at D_HIDDEN trained four times longer at LONG["T"] ("long")."""
    out = []
    for task, lengths in LENGTHS.items():
        M, K = TASKS[task]["M"], TASKS[task]["K"]
        budget = n_params("lstm-b1", M, D_HIDDEN, K)
        for T in lengths:
            for model in MODELS:
                sizings = [("hidden", D_HIDDEN)]
                if not model.startswith("lstm"):
                    sizings.append(("params", matched_size(model, M, budget, K)))
                for sizing, D in sizings:
                    out += [_config(task, T, model, sizing, D, s) for s in SEEDS]
    for D in SWEEP["D"]:
        for model in MODELS:
            out += [_config(SWEEP["task"], SWEEP["T"], model, "sweep", D, s)
                    for s in SEEDS]
    for model in MODELS:
        out += [_config(LONG["task"], LONG["T"], model, "long", D_HIDDEN, s,
                        LONG["steps"]) for s in SEEDS]
    return sorted(out, key=_cost, reverse=True)   # longest first: both cores stay busy


def _cost(config):
    """Rough relative cost of a run: steps x length x (gate blocks + 1/2)."""
    return config["steps"] * config["T"] * (_model(config["model"])[1] + 0.5)


GRID = experiments.Grid(
    "gru_or_lstm", GRID_PATH, configs, run,
    "chapter 06: simple RNN, LSTM (b_f = 0, 1), GRU (reset before, after) on the "
    "digit-sum, adding and copy tasks, equal state size and equal parameter count")


def read_results(path=GRID_PATH):
    """The committed rows as flat dicts: config and result merged, plus "seconds"
    (wall time of the run, on a shared machine) and "ms_per_step"."""
    out = []
    for row in experiments.read_rows(path):
        flat = {**row["config"], **row["result"], "seconds": row.get("seconds")}
        flat["ms_per_step"] = 1e3 * row["seconds"] / row["config"]["steps"] \
            if row.get("seconds") else None
        out.append(flat)
    return out


CONFIG_KEYS = ("task", "T", "model", "sizing", "D", "N", "steps", "lr", "clip", "seed")


def config_of(row):
    """The configuration of a row of ``read_results``: rerun it with ``run``."""
    return {k: row[k] for k in CONFIG_KEYS}


def select(rows, **match):
    """The rows (from ``read_results``) whose fields equal every ``match`` value; a
    tuple value matches any of its members."""
    def ok(row, key, value):
        return row[key] in value if isinstance(value, tuple) else row[key] == value
    return [r for r in rows if all(ok(r, k, v) for k, v in match.items())]


def score(row):
    """One number per run, higher is better, 1 is perfect: the test accuracy
    (digit_sum; copy: of the recalled symbols), or for the adding problem the share of
    the target's variance explained, 1 - MSE / (1/6) (0: no better than the mean)."""
    if row["test_loss"] is None:       # diverged
        return math.nan
    if row["task"] == "adding":
        return 1.0 - row["test_loss"] / row["baseline_loss"]
    return row["test_metric"]


def read_speed(path=SPEED_PATH):
    """The speed measurement written by ``python -m rnnbook.compare speed``."""
    return json.loads(Path(path).read_text())


def machine():
    """What decides the last bits of the training's arithmetic: NumPy's version and the
    SIMD code paths it dispatches to on this processor, and the BLAS library's build and
    the kernel it picked for this processor (OpenBLAS's core name). The grid is
    reproducible bit for bit only where these agree: training is chaotic, so a change
    in the last bit of one product can change a run's final accuracy by tens of
    points (chapter 06 measures it)."""
    import ctypes
    import glob
    from numpy._core import _multiarray_umath as umath
    features = umath.__cpu_features__
    simd = sorted(f for f in umath.__cpu_dispatch__ if features.get(f))
    blas = None
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs",
                                  "libscipy_openblas*"))
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
            get = handle.scipy_openblas_get_config64_
            get.restype = ctypes.c_char_p
            blas = get().decode()
            core = handle.scipy_openblas_get_corename64_
            core.restype = ctypes.c_char_p
            blas += " core=" + core().decode()
        except (OSError, AttributeError):
            continue
    return {"numpy": np.__version__, "simd": simd, "blas": blas}


def _record_invocation(path, command):
    """Append this invocation (command, versions, machine) to the grid's meta file."""
    meta = json.loads(path.read_text()) if path.exists() else {
        "grid": GRID.name, "seeds": list(SEEDS), "invocations": []}
    meta["invocations"].append({"command": command, "versions": experiments.versions(),
                                "machine": machine()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---- speed: NumPy cells against torch ------------------------------------------------

def _torch_model(model, params, head, M, D, K, dtype):
    """A torch.nn module with the parameters of ``params`` and a Linear head, trained
    so that it follows the NumPy model step for step: torch's second bias
    (bias_hh) is frozen at zero (the GRU's n block of it holds b_hn and trains)."""
    import torch
    kind = {"rnn": torch.nn.RNN, "lstm-b1": torch.nn.LSTM, "lstm-b0": torch.nn.LSTM,
            "gru-after": torch.nn.GRU}[model]
    net = kind(M, D, dtype=dtype)
    p = {k: torch.tensor(v, dtype=dtype) for k, v in params.items()}
    with torch.no_grad():
        if model == "rnn":
            W, U, b = p["W"], p["U"], p["b"]
        elif model.startswith("lstm"):
            order = "ifco"      # torch's i, f, g, o
            W = torch.cat([p["W_" + g] for g in order])
            U = torch.cat([p["U_" + g] for g in order])
            b = torch.cat([p["b_" + g] for g in order])
        else:
            order = "rzh"       # torch's r, z, n
            W = torch.cat([p["W_" + g] for g in order])
            U = torch.cat([p["U_" + g] for g in order])
            b = torch.cat([p["b_" + g] for g in order])
        net.weight_ih_l0.copy_(W)
        net.weight_hh_l0.copy_(U)
        net.bias_ih_l0.copy_(b)
        net.bias_hh_l0.zero_()
        if model == "gru-after":
            net.bias_hh_l0[2 * D:] = p["b_hn"]
    if model == "gru-after":
        mask = torch.zeros(3 * D, dtype=dtype)
        mask[2 * D:] = 1
        net.bias_hh_l0.register_hook(lambda g: g * mask)
    else:
        net.bias_hh_l0.requires_grad_(False)
    lin = torch.nn.Linear(D, K, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(head["V"], dtype=dtype))
        lin.bias.copy_(torch.tensor(head["c"], dtype=dtype))
    return net, lin


def torch_training(model, task, T, steps, D=D_HIDDEN, seed=0, dtype="float64"):
    """The training of ``train_model`` (same initial parameters, batches, Adam and
    clipping) written with torch.nn and autograd. Returns (losses, seconds): the
    seconds are the process's CPU time (``time.process_time``), which other programs
    on a shared machine disturb far less than the wall time."""
    import torch
    dt = getattr(torch, dtype)
    spec = TASKS[task]
    M, K = spec["M"], spec["K"]
    params = init_model(model, M, D, np.random.default_rng([seed, 0]))
    head = train.init_head(D, K, np.random.default_rng([seed, 1]))
    net, lin = _torch_model(model, params, head, M, D, K, dt)
    trainable = [q for q in [*net.parameters(), *lin.parameters()] if q.requires_grad]
    opt = torch.optim.Adam(trainable, lr=LR)
    batches = make_task(task, T, N)
    rng = np.random.default_rng(seed)
    losses = []
    start = time.process_time()
    for _ in range(steps):
        x, y = batches(rng)
        out, _ = net(torch.tensor(x, dtype=dt))
        logits = lin(out[-1] if spec["where"] == "last" else out)
        if spec["loss"] == "mse":
            loss = torch.nn.functional.mse_loss(logits, torch.tensor(y, dtype=dt))
        else:
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, K), torch.from_numpy(y).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        opt.step()
        losses.append(loss.item())
    return np.array(losses), time.process_time() - start


def numpy_training(model, task, T, steps, D=D_HIDDEN, seed=0):
    """``train_model`` for ``steps`` steps. Returns (losses, seconds of CPU time)."""
    config = _config(task, T, model, "hidden", D, seed)
    config["steps"] = steps
    start = time.process_time()
    result = train_model(config)
    return result.history["loss"], time.process_time() - start


SPEED_LENGTHS = (10, 20, 35, 50, 100)
SPEED_TORCH = ("rnn", "lstm-b1", "gru-after")


def measure_speed(repeat=5, steps=20, lengths=SPEED_LENGTHS, torch_lengths=(20, 50)):
    """Milliseconds of CPU time per training step (digit_sum, N = 32, D = 32, one
    thread), the fastest of ``repeat`` runs of ``steps`` steps (the least disturbed by
    the machine's other work): every NumPy model at every length, and for
    the cells torch has (RNN, LSTM, GRU reset after) the same training in torch
    float64 and float32, with the largest difference of the float64 loss curves."""
    import torch
    torch.set_num_threads(1)
    out = {"numpy": {}, "torch": {}, "repeat": repeat, "steps": steps,
           "task": "digit_sum", "N": N, "D": D_HIDDEN,
           "clock": "process CPU time, fastest of repeat",
           "loadavg_before": [round(v, 2) for v in os.getloadavg()]}

    def fastest_ms(fn):
        fn()   # warm-up
        return 1e3 * min(fn()[1] for _ in range(repeat)) / steps

    for model in MODELS:
        out["numpy"][model] = {str(T): fastest_ms(
            lambda: numpy_training(model, "digit_sum", T, steps)) for T in lengths}
    for model in SPEED_TORCH:
        out["torch"][model] = {}
        for T in torch_lengths:
            a, _ = numpy_training(model, "digit_sum", T, 100)
            b, _ = torch_training(model, "digit_sum", T, 100)
            out["torch"][model][str(T)] = {
                "numpy_ms": out["numpy"][model][str(T)] if str(T) in out["numpy"][model]
                else fastest_ms(lambda: numpy_training(model, "digit_sum", T, steps)),
                "torch64_ms": fastest_ms(
                    lambda: torch_training(model, "digit_sum", T, steps)),
                "torch32_ms": fastest_ms(
                    lambda: torch_training(model, "digit_sum", T, steps,
                                           dtype="float32")),
                "max_loss_difference_100_steps": float(np.max(np.abs(a - b))),
            }
    out["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    out["versions"] = {**experiments.versions(), "torch": torch.__version__}
    return out


# ---- command line ---------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m rnnbook.compare",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="run the grid (resumable)")
    g.add_argument("--out", default=str(GRID_PATH), help="results file (JSON Lines)")
    g.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--limit", type=int, default=None,
                   help="run at most this many new configurations")
    g.add_argument("--dry-run", action="store_true",
                   help="print how many configurations are done and to do")
    s = sub.add_parser("speed", help="time per step: NumPy cells and torch")
    s.add_argument("--out", default=str(SPEED_PATH))
    s.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    if args.command == "speed":
        result = measure_speed(args.repeat)
        result["command"] = "python -m rnnbook.compare " + " ".join(argv)
        Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.dry_run:
        done = {row["key"] for row in experiments.read_rows(args.out)} \
            if Path(args.out).exists() else set()
        todo = [c for c in configs() if experiments.key(c) not in done]
        print(f"{GRID.name}: {len(configs()) - len(todo)} of {len(configs())} "
              f"configurations done in {args.out}")
        return 0
    start = time.perf_counter()
    command = "python -m rnnbook.compare " + " ".join(argv)
    out = Path(args.out)
    meta = out.with_name(out.name.removesuffix(".jsonl") + ".meta.json")
    try:
        count = experiments.run_grid(GRID, out, args.jobs, args.limit, command=command)
    except RuntimeError as e:
        print(f"rnnbook.compare: {e}", file=sys.stderr)
        return 1
    if count:
        _record_invocation(meta, command)
    print(f"{GRID.name}: {count} runs in {time.perf_counter() - start:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
