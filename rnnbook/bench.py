"""Measurements, one thread (as on Binder's single core).

    python -m rnnbook.bench cells [--cells rnn lstm gru gru-before] [--repeat 20]
                                  [--T 50 --N 32 --M 64 --D 128]
        median time of forward+backward of each rnnbook cell and of its torch.nn module,
        float64, one thread, the ratio (NumPy time / torch time; below 1 means NumPy is
        faster) and the cell's GEMM rate as a share of this machine's single-thread DGEMM
        rate; at T N M D = 50 32 32 64 and 50 32 128 256 unless sizes are given
    python -m rnnbook.bench notebooks [PATH ...]
        wall time (kernel start included) and the kernel's peak memory of executing
        each notebook (default: book/, solutions/ and exercises/)
    python -m rnnbook.bench grade [--n 100 --baseline-n 10 --jobs CORES]
        `rnnbook grade` on N correct submissions of every exercise (generated from
        solutions/, outputs cleared), then the nbclient baseline (one fresh kernel per
        notebook, as nbgrader and otter-grader run them, --jobs at a time) on the first
        BASELINE_N students' notebooks; prints seconds per notebook and the ratio
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"   # before NumPy and torch load their thread pools

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# The cells compared with PyTorch: name -> (module, torch class, gate blocks G, kwargs,
# keys of from_torch's params that the variant does not take).
CELLS = {
    "rnn": ("rnnbook.rnn", "RNN", 1, {}, ()),
    "lstm": ("rnnbook.lstm", "LSTM", 4, {}, ()),
    "gru": ("rnnbook.gru", "GRU", 3, {"reset": "after"}, ()),
    "gru-before": ("rnnbook.gru", "GRU", 3, {"reset": "before"}, ("b_hn",)),
}
SIZES = ((50, 32, 32, 64), (50, 32, 128, 256))   # (T, N, M, D)
STEP_GEMM = (32, 256, 1024)   # (N, D, 4D): the LSTM's product with U in one step at D=256


def dgemm_rate(shape=(1024, 1024, 1024), repeat=5, library="numpy"):
    """This machine's single-thread DGEMM rate in GFLOP/s for a float64 product of an
    (m, k) by a (k, n) matrix, shape = (m, k, n), through NumPy's BLAS (OpenBLAS in the
    PyPI wheels) or, with library="torch", through torch's (MKL in its x86 CPU wheels)."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    reps = 1 if m * k * n > 1e8 else 50     # a small product: time 50 in a row
    if library == "torch":
        import torch
        torch.set_num_threads(1)
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    return reps * 2 * m * k * n / _median_time(
        lambda: [a @ b for _ in range(reps)], repeat) / 1e9


def gemm_flops(T, N, M, D, G):
    """GEMM FLOPs of one forward+backward of a cell with G gate blocks: the forward's input
    and recurrent products (2 T N G D (M + D)), and the backward's four (dW, dU, dx, dh):
    three times the forward's."""
    return 3 * 2 * T * N * G * D * (M + D)


def bench_cell(name, T, N, M, D, repeat, rate=None):
    """Median time of forward+backward of an rnnbook cell and of its torch.nn module,
    float64, one thread; prints the ratio and the share of the DGEMM rate."""
    import importlib

    import torch
    torch.set_num_threads(1)
    path, torch_class, G, kwargs, drop = CELLS[name]
    lib = importlib.import_module(path)
    torch.manual_seed(0)
    module = getattr(torch.nn, torch_class)(M, D).double()
    params = {k: v for k, v in lib.from_torch(module).items() if k not in drop}
    rng = np.random.default_rng(0)
    x, dhs = rng.normal(size=(T, N, M)), rng.normal(size=(T, N, D))
    states = [rng.normal(size=(N, D)) for _ in range(2 if torch_class == "LSTM" else 1)]
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    dhst = torch.tensor(dhs)

    def numpy_step():
        _, cache = lib.forward(params, x, *states, **kwargs)
        lib.backward(dhs, cache)

    def torch_step():
        module.zero_grad(set_to_none=True)
        out, _ = module(xt, tuple(st) if len(st) == 2 else st[0])
        out.backward(dhst)

    t_np = _median_time(numpy_step, repeat)
    t_torch = _median_time(torch_step, repeat)
    gflops = gemm_flops(T, N, M, D, G) / t_np / 1e9
    share = f", {100 * gflops / rate:3.0f} % of DGEMM" if rate else ""
    print(f"  {name:10s} T={T} N={N} M={M:3d} D={D:3d}: rnnbook {t_np * 1e3:7.2f} ms, "
          f"torch.nn.{torch_class} {t_torch * 1e3:7.2f} ms, ratio {t_np / t_torch:.2f}; "
          f"GEMMs at {gflops:5.1f} GFLOP/s{share}")
    return t_np, t_torch


def bench_cells(names, sizes, repeat, json_path=None):
    """Time every cell at every size; with json_path, also write the figures there (the
    chapters print the committed book/data/bench_cells.json rather than timing live)."""
    rate = dgemm_rate()
    step = {lib: dgemm_rate(STEP_GEMM, library=lib) for lib in ("numpy", "torch")}
    print(f"forward+backward, float64, 1 thread, median of {repeat}; ratio = rnnbook / torch "
          f"(below 1: NumPy faster); single-thread DGEMM rate {rate:.1f} GFLOP/s; "
          "an LSTM step's product (32x256 by 256x1024) at "
          f"{step['numpy']:.1f} GFLOP/s in NumPy, {step['torch']:.1f} in torch")
    rows = []
    for name in names:
        for T, N, M, D in sizes:
            t_np, t_torch = bench_cell(name, T, N, M, D, repeat, rate)
            G = CELLS[name][2]
            rows.append({"cell": name, "T": T, "N": N, "M": M, "D": D,
                         "rnnbook_ms": round(t_np * 1e3, 3), "torch_ms": round(t_torch * 1e3, 3),
                         "ratio": round(t_np / t_torch, 3),
                         "gemm_share": round(gemm_flops(T, N, M, D, G) / t_np / 1e9 / rate, 3)})
    if json_path:
        import json
        import platform

        import torch
        record = {"command": "python -m rnnbook.bench " + " ".join(sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
                  or platform.machine(), "cpu": _cpu_name(), "numpy": np.__version__,
                  "torch": torch.__version__, "repeat": repeat,
                  "load_average_1min": round(os.getloadavg()[0], 2),
                  "dgemm_gflops": round(rate, 1),
                  "step_gemm_gflops": {k: round(v, 1) for k, v in step.items()},
                  "rows": rows}
        Path(json_path).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {json_path}")
    return rows


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# bench_notebooks runs each notebook in a process of its own, so that the peak memory of
# its children (the kernel) is the notebook's alone.
_RUN_NOTEBOOK = ("import resource, sys; from rnnbook.bench import _run_nbclient; "
                 "seconds, errors = _run_nbclient(sys.argv[1]); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, errors)")


def bench_notebooks(paths):
    if not paths:
        paths = [p for d in ("book", "solutions", "exercises") for p in sorted(Path(d).glob("*.ipynb"))]
    print(f"{'notebook':45s} {'seconds':>8s} {'peak MB':>8s} {'errors':>6s}")
    for path in paths:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _RUN_NOTEBOOK, str(path)],
                                capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            print(f"{str(path):45s} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        peak_kb, errors = result.stdout.split()[-2:]
        print(f"{str(path):45s} {elapsed:8.1f} {int(peak_kb) / 1024:8.0f} {errors:>6s}")


def _run_nbclient(path):
    """One notebook in a fresh kernel (the baseline of bench_grade); returns seconds, errors."""
    import nbformat
    from nbclient import NotebookClient
    start = time.perf_counter()
    for attempt in range(3):   # two kernels starting at once can race for a port: retry
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=True,
                           resources={"metadata": {"path": str(Path(path).parent)}}).execute()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    errors = sum(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return time.perf_counter() - start, errors


def bench_grade(n, baseline_n, jobs):
    import csv
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    import nbformat
    from rnnbook.grading.grader import ROOT, Grader
    from rnnbook.grading.notebooks import solved_submission
    jobs = jobs or len(os.sched_getaffinity(0))
    names = sorted(p.stem for p in (ROOT / "exercises").glob("*.ipynb"))
    tmp = Path(tempfile.mkdtemp(prefix="rnnbook-bench-grade-"))
    try:
        subs = tmp / "submissions"
        for name in names:
            text = nbformat.writes(solved_submission(ROOT / "solutions" / f"{name}.ipynb"))
            for i in range(n):
                (subs / f"student{i:03d}").mkdir(parents=True, exist_ok=True)
                (subs / f"student{i:03d}" / f"{name}.ipynb").write_text(text)
        count = n * len(names)
        print(f"{n} correct submissions of each of {', '.join(names)}: {count} notebooks, "
              f"{jobs} at a time")

        start = time.perf_counter()
        summary = Grader(subs, tmp / "out", jobs=jobs, progress=False, log=lambda text: None).run()
        t_grade = time.perf_counter() - start
        with open(tmp / "out" / "grades.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        full = sum(r["status"] == "graded" and r["score"] == r["max_score"] for r in rows)
        print(f"  rnnbook grade: {count:4d} notebooks in {t_grade:6.1f} s = "
              f"{t_grade / count:6.3f} s per notebook (start-up included); "
              f"full marks: {full}/{len(rows)}; isolation: {summary['isolation']}")

        files = [subs / f"student{i:03d}" / f"{name}.ipynb" for i in range(min(baseline_n, n))
                 for name in names]
        start = time.perf_counter()
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_run_nbclient, files))
        t_base = time.perf_counter() - start
        errors = sum(e for _, e in runs)
        print(f"  nbclient     : {len(files):4d} notebooks in {t_base:6.1f} s = "
              f"{t_base / len(files):6.3f} s per notebook (a fresh kernel each; "
              f"median {statistics.median(t for t, _ in runs):.2f} s of wall time per kernel; "
              f"{errors} cell errors)")
        ratio = (t_base / len(files)) / (t_grade / count)
        print(f"  ratio        : {ratio:.1f}x faster per notebook with rnnbook grade")
        return t_grade / count, t_base / len(files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rnnbook.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["cells", "notebooks", "grade"])
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS),
                        default=["rnn", "lstm", "gru", "gru-before"])
    parser.add_argument("paths", nargs="*", help="notebooks (with 'notebooks')")
    for name in ("T", "N", "M", "D"):
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", default=None,
                        help="with 'cells': also write the figures to this JSON file "
                             "(book/data/bench_cells.json is the committed one)")
    parser.add_argument("--n", type=int, default=100, help="students (with 'grade')")
    parser.add_argument("--baseline-n", type=int, default=10,
                        help="students whose notebooks nbclient runs (with 'grade')")
    parser.add_argument("--jobs", type=int, default=None, help="at a time (with 'grade')")
    args = parser.parse_args(argv)
    if args.what == "notebooks":
        return bench_notebooks(args.paths)
    if args.what == "grade":
        bench_grade(args.n, args.baseline_n, args.jobs)
        return
    sizes = SIZES
    if any(v is not None for v in (args.T, args.N, args.M, args.D)):
        sizes = [tuple(v if v is not None else d for v, d in
                       zip((args.T, args.N, args.M, args.D), SIZES[0]))]
    bench_cells(args.cells, sizes, args.repeat, args.json)


if __name__ == "__main__":
    main()
