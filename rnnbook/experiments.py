"""Experiments too long for a notebook: grids of training runs, one row per run, resumable.

    python -m rnnbook.experiments --list
    python -m rnnbook.experiments clipping [--jobs 2] [--out PATH] [--limit K] [--dry-run]

A *grid* has a name, a default results file (JSON Lines under book/data/), the list of
its configurations (dicts of JSON values; the seed is one of them) and a function
``run(config) -> result`` (a dict of JSON values; must be deterministic). The runner

- writes one row per finished run: {"key", "config", "result", "seconds", "versions",
  "command"}; ``key`` is the configuration as canonical JSON, so a configuration has
  exactly one row;
- appends each row with a single write of one complete line, then fsync: a run that
  finished is on disk before it counts as done. A runner killed mid-write leaves at
  most a torn last line, which the next runner removes (atomically) before it resumes;
- resumes: configurations whose key is in the file are skipped, so an interrupted grid
  continues where it stopped, and no row is ever written twice;
- refuses to start while another runner holds the file (a lock in the temporary folder);
- runs the configurations on ``--jobs`` processes (default: all cores), each with one
  BLAS thread, with a tqdm progress bar; a run's result depends only on its config;
- when the grid is complete, rewrites the file sorted by key (atomically: a temporary
  file renamed over it), so the committed file does not depend on the order in which
  the processes finished.

``read_rows(path)`` reads a results file (and refuses duplicated keys); ``run_config``
reruns one configuration (a test compares it with the committed row).
To add a grid (chapter 06): write ``configs()`` and ``run(config)`` below and add a
``Grid`` to ``GRIDS``.
"""
import os

if __name__ == "__main__":   # one BLAS thread per process, before NumPy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import fcntl  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data"


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str             # the subcommand
    path: Path            # default results file
    configs: Callable     # () -> list of config dicts
    run: Callable         # config -> result dict (JSON values), deterministic
    help: str = ""


def key(config):
    """A configuration's identity: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


# ---- reading and writing rows ---------------------------------------------------------

def read_rows(path):
    """The rows of a results file, in file order. A torn last line (no newline, from a
    runner killed mid-write) is ignored; a duplicated key or a bad line elsewhere
    raises ValueError."""
    rows, _ = _read(Path(path))
    return rows


def _read(path):
    """(rows, length of the intact prefix in bytes)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    rows, seen, good = [], set(), 0
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            row = json.loads(line)
            row["key"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise ValueError(f"{path}: line {number} is not a row (JSON with a key)") \
                from None
        if row["key"] in seen:
            raise ValueError(f"{path}: line {number} repeats the key {row['key']}")
        seen.add(row["key"])
        rows.append(row)
        good += len(line) + 1
    return rows, good


def lock_path(path):
    """The lock file of a results file: in the temporary folder (never next to the
    results, so nothing stray is committed), named after the results' absolute path."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"rnnbook-experiments-{digest}.lock"


def _atomic_write(path, text):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append(fd, row):
    line = (json.dumps(row, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    written = os.write(fd, line)          # O_APPEND: one write, at the end
    if written != len(line):
        raise OSError(f"short write ({written} of {len(line)} bytes)")
    os.fsync(fd)


def versions():
    import importlib.metadata as md
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        out["rnnbook"] = md.version("rnnbook")
    except md.PackageNotFoundError:
        pass
    return out


# ---- running --------------------------------------------------------------------------

def _worker_init():
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _timed(run, config):
    start = time.perf_counter()
    result = run(config)
    return config, result, time.perf_counter() - start


def run_config(grid, config):
    """One configuration's result, as the runner computes it (without writing)."""
    return _clean(grid.run(config))


def run_grid(grid, path=None, jobs=None, limit=None, progress=True, command=None):
    """Run every configuration of ``grid`` that ``path`` does not hold yet.

    jobs  -- processes (default: the number of cores); 1 runs in this process
    limit -- run at most this many new configurations (then stop, resumable)
    Returns the number of runs done now. Raises RuntimeError if another runner holds
    the file.
    """
    path = Path(path or grid.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    lock = open(lock_path(path), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RuntimeError(f"another runner is writing {path}") from None
    try:
        rows, good = _read(path)
        if path.exists() and good != path.stat().st_size:     # a torn last line
            _atomic_write(path, path.read_bytes()[:good].decode("utf-8"))
        done = {row["key"] for row in rows}
        configs = grid.configs()
        keys = [key(c) for c in configs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"grid {grid.name} lists a configuration twice")
        todo = [c for c, k in zip(configs, keys) if k not in done]
        if limit is not None:
            todo = todo[:limit]
        meta = {"versions": versions(),
                "command": command or f"python -m rnnbook.experiments {grid.name}"}
        count = _run_all(grid, path, todo, jobs, progress, meta,
                         (len(configs), len(set(keys) & done)))
        rows, _ = _read(path)
        if {row["key"] for row in rows} >= set(keys):          # complete: sort by key
            rows.sort(key=lambda row: row["key"])
            _atomic_write(path, "".join(json.dumps(r, sort_keys=True, allow_nan=False)
                                        + "\n" for r in rows))
        return count
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _run_all(grid, path, todo, jobs, progress, meta, counts):
    from tqdm import tqdm
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bar = tqdm(total=counts[0], initial=counts[1], desc=grid.name, unit="run",
               disable=not progress, smoothing=0.05)
    count = 0
    try:
        task = functools.partial(_timed, grid.run)
        if jobs == 1 or len(todo) <= 1:
            results = map(task, todo)
            pool = None
        else:
            pool = multiprocessing.get_context("fork").Pool(jobs, _worker_init)
            results = pool.imap_unordered(task, todo)
        try:
            for config, result, seconds in results:
                _append(fd, {"key": key(config), "config": config,
                             "result": _clean(result), "seconds": round(seconds, 3), **meta})
                count += 1
                bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        bar.close()
        os.close(fd)
    return count


def _clean(value):
    """JSON values only: NumPy scalars and arrays become Python numbers and lists,
    non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def significant(a, digits=6):
    """Round to ``digits`` significant digits (compact committed files); NaN and
    infinities become None (JSON has no NaN)."""
    a = np.asarray(a, dtype=np.float64)
    return [float(f"{v:.{digits - 1}e}") if math.isfinite(v) else None for v in a]


def block_reduce(a, size, how):
    """Reduce a per-step series to one value per block of ``size`` steps (NaN-aware;
    a block with no finite value is NaN)."""
    a = np.asarray(a, dtype=np.float64)
    n = -(-len(a) // size)
    out = np.full(n, np.nan)
    for i in range(n):
        block = a[i * size:(i + 1) * size]
        block = block[np.isfinite(block)]
        if block.size:
            out[i] = block.mean() if how == "mean" else block.max()
    return out


# ---- chapter 03: exploding gradients and clipping ---------------------------------------

CLIPPING_STEPS, CLIPPING_BLOCK, CLIPPING_TAIL = 2000, 20, 200
CLIPPING_LRS = (1e-5, 1e-4, 1e-3, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def clipping_configs():
    """Both cells of chapter 03 on the adding problem with T = 50 steps (D = 32, batches
    of 32), U at the edge (spectral radius 1), the readout frozen (only the recurrence
    trains), plain SGD at ten learning rates (1e-5 to 3), without clipping and with norm
    clipping at tau = 1, three seeds: 120 runs."""
    return [{"cell": cell, "task": "adding", "T": 50, "N": 32, "D": 32, "rho": 1.0,
             "frozen": ["V", "c"], "optimizer": "sgd", "lr": lr, "clip": clip,
             "steps": CLIPPING_STEPS, "seed": seed}
            for cell in ("rnn", "residual")
            for lr in CLIPPING_LRS
            for clip in (None, 1.0)
            for seed in range(3)]


def spectral_radius(U):
    """rho(U), the largest absolute eigenvalue (NaN if U is not finite)."""
    U = np.asarray(U, dtype=np.float64)
    if not np.all(np.isfinite(U)):
        return float("nan")
    return float(np.max(np.abs(np.linalg.eigvals(U))))


def clipping_init(config):
    """The initial cell parameters of a ``clipping_configs`` run:
    ``train.init_params(cell.PARAMS, 2, D, default_rng(seed))`` (torch's init), then U
    rescaled to spectral radius ``rho``."""
    from rnnbook import train
    cell = importlib.import_module("rnnbook." + config["cell"])
    params = train.init_params(cell.PARAMS, 2, config["D"],
                               np.random.default_rng(config["seed"]))
    params["U"] = params["U"] * (config["rho"] / spectral_radius(params["U"]))
    return params


def clipping_run(config):
    """Train one configuration of ``clipping_configs`` from ``clipping_init(config)``;
    the batches and the (frozen) head come from ``seed`` too (``train.fit``).
    Curves are per block of CLIPPING_BLOCK steps: the mean loss, and the largest
    gradient norms of the cell (U, W, b) and of the readout (V, c, not trained)."""
    from rnnbook import tasks, train
    cell = importlib.import_module("rnnbook." + config["cell"])
    task = functools.partial(getattr(tasks, config["task"]), T=config["T"], N=config["N"])
    r = train.fit(cell, clipping_init(config), task, config["steps"], lr=config["lr"],
                  optimizer=config["optimizer"], clip=config["clip"], seed=config["seed"],
                  frozen=config["frozen"], progress=False)
    h = r.history

    def peak(a, how):
        return float(how(a)) if np.any(np.isfinite(a)) else None

    tail = h["loss"][-CLIPPING_TAIL:]
    cell_norm = h["grad_norm_cell"]
    return {
        "diverged_at": r.diverged_at,
        "final_loss": None if r.diverged_at is not None else float(np.mean(tail)),
        "clipped_fraction": float(np.nansum(h["clipped"]) / config["steps"]),
        "max_grad_norm_cell": peak(cell_norm, np.nanmax),
        "median_grad_norm_cell": peak(cell_norm, np.nanmedian),
        "max_grad_norm_head": peak(h["grad_norm_head"], np.nanmax),
        "rho_final": spectral_radius(r.params["U"]),
        "block": CLIPPING_BLOCK,
        "loss_curve": significant(block_reduce(h["loss"], CLIPPING_BLOCK, "mean")),
        "grad_norm_cell_curve": significant(block_reduce(cell_norm, CLIPPING_BLOCK,
                                                          "max")),
        "grad_norm_head_curve": significant(block_reduce(h["grad_norm_head"],
                                                          CLIPPING_BLOCK, "max")),
    }


GRIDS = {
    "clipping": Grid("clipping", DATA / "03_clipping.jsonl", clipping_configs, clipping_run,
                     "chapter 03: simple RNN and (6.50) network, T = 50, frozen readout, "
                     "SGD with and without gradient-norm clipping (120 runs)"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rnnbook.experiments",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", nargs="?", choices=sorted(GRIDS), help="the grid to run")
    parser.add_argument("--list", action="store_true", help="list the grids and exit")
    parser.add_argument("--out", help="results file (default: the grid's, under book/data)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes (default: all cores)")
    parser.add_argument("--limit", type=int, default=None,
                        help="run at most this many new configurations")
    parser.add_argument("--dry-run", action="store_true",
                        help="print how many configurations are done and to do")
    args = parser.parse_args(argv)
    if args.list or not args.grid:
        for g in GRIDS.values():
            print(f"{g.name:12} {g.path.relative_to(ROOT)}  {g.help}")
        return 0
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be >= 1")
    grid = GRIDS[args.grid]
    path = Path(args.out) if args.out else grid.path
    if args.dry_run:
        done = {row["key"] for row in read_rows(path)}
        total = len(grid.configs())
        print(f"{grid.name}: {len(done)} of {total} configurations done in {path}")
        return 0
    start = time.perf_counter()
    try:
        count = run_grid(grid, path, args.jobs, args.limit,
                         command="python -m rnnbook.experiments " + " ".join(
                             sys.argv[1:] if argv is None else argv))
    except RuntimeError as e:
        print(f"rnnbook.experiments: {e}", file=sys.stderr)
        return 1
    print(f"{grid.name}: {count} runs in {time.perf_counter() - start:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
