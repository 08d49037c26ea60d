"""rnnbook.compare (chapter 06): counting against torch, one training run against torch,
the grid's configurations, and the committed results (complete, and reproducible: one
configuration is rerun and must give its committed row exactly)."""
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rnnbook import compare, experiments, train

TORCH = {"rnn": torch.nn.RNN, "lstm-b0": torch.nn.LSTM, "lstm-b1": torch.nn.LSTM,
         "gru-after": torch.nn.GRU}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny products: torch's thread pool only costs time here (tens of ms per step on
    a busy machine); the thread count is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- counting ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", compare.MODELS)
@pytest.mark.parametrize("M,D,K", [(1, 1, 0), (10, 32, 19), (3, 7, 2)])
def test_n_params_is_the_size_of_the_params_dict(model, M, D, K):
    params = compare.init_model(model, M, D, np.random.default_rng(0))
    head = train.init_head(D, K, np.random.default_rng(1)) if K else {}
    size = sum(v.size for v in {**params, **head}.values())
    assert compare.n_params(model, M, D, K) == size


@pytest.mark.parametrize("model", sorted(TORCH))
def test_n_params_against_torch_modules(model):
    """torch keeps two biases per block (bias_ih, bias_hh); rnnbook one, plus b_hn for the
    GRU with the reset gate after the product."""
    M, D = 6, 9
    module = TORCH[model](M, D)
    blocks = module.weight_hh_l0.shape[0] // D
    torch_count = sum(p.numel() for p in module.parameters())
    extra = D if model == "gru-after" else 0
    assert compare.n_params(model, M, D) == torch_count - blocks * D + extra


@pytest.mark.parametrize("model", sorted(TORCH))
@pytest.mark.parametrize("where", ["last", "all"])
def test_gemm_flops_against_torch_flop_counter(model, where):
    """torch's FlopCounterMode counts every matrix product of the module's forward and
    backward (initial states requiring grad, as rnnbook's backward returns dh0)."""
    T, N, M, D, K = 5, 3, 4, 6, 7
    torch.manual_seed(0)
    module = TORCH[model](M, D, dtype=torch.float64)
    head = torch.nn.Linear(D, K, dtype=torch.float64)
    x = torch.randn(T, N, M, dtype=torch.float64, requires_grad=True)

    def zeros():
        return torch.zeros(1, N, D, dtype=torch.float64, requires_grad=True)
    states = (zeros(), zeros()) if model.startswith("lstm") else zeros()
    with FlopCounterMode(display=False) as counter:
        hs, _ = module(x, states)
        out = head(hs[-1] if where == "last" else hs)
        forward = counter.get_total_flops()
        out.sum().backward()
        total = counter.get_total_flops()
    want = compare.gemm_flops(model, T, N, M, D, K, where)
    assert want["forward"] == forward
    assert want["total"] == total
    assert want["backward"] == total - forward


def test_gemm_flops_gru_placements_cost_the_same():
    a = compare.gemm_flops("gru-before", 10, 4, 3, 5)
    b = compare.gemm_flops("gru-after", 10, 4, 3, 5)
    assert a == b


@pytest.mark.parametrize("model", compare.MODELS)
@pytest.mark.parametrize("M,budget,K", [(10, 6131, 19), (2, 4513, 1), (5, 300, 0),
                                        (3, 1, 0)])
def test_matched_size_is_the_closest(model, M, budget, K):
    D = compare.matched_size(model, M, budget, K)
    gaps = {d: abs(compare.n_params(model, M, d, K) - budget) for d in range(1, 200)}
    best = min(gaps.values())
    assert gaps[D] == best and D == min(d for d, g in gaps.items() if g == best)


def test_structure_table():
    rows = {r["cell"]: r for r in compare.structure_table(M=10, D=32)}
    assert set(rows) == {"simple RNN", "LSTM", "GRU (reset before)", "GRU (reset after)"}
    assert rows["LSTM"]["params"] * 3 == rows["GRU (reset before)"]["params"] * 4
    assert rows["GRU (reset after)"]["params"] == rows["GRU (reset before)"]["params"] + 32
    assert rows["LSTM"]["state floats"] == 2 * rows["simple RNN"]["state floats"]
    for r in rows.values():
        assert r["cache floats/step"] > r["state floats"]
        assert r["FLOPs/step"] == 6 * r["blocks G"] * 32 * (10 + 32)


@pytest.mark.parametrize("call", [
    lambda: compare.n_params("lstm-b2", 3, 4),
    lambda: compare.n_params("lstm-b1", 0, 4),
    lambda: compare.n_params("lstm-b1", 3, 4.0),
    lambda: compare.n_params("rnn", 3, 4, -1),
    lambda: compare.gemm_flops("rnn", 3, 4, 5, 6, where="first"),
    lambda: compare.matched_size("gru-after", 3, 0),
    lambda: compare.make_task("parity", 10, 2),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


# ---- one run ----------------------------------------------------------------------------

def test_steps_to_threshold():
    loss = np.r_[np.ones(100), np.zeros(100)]
    assert compare.steps_to_threshold(loss, 0.5, window=10) == 105
    assert compare.steps_to_threshold(loss, 0.0, window=10) == 110
    assert compare.steps_to_threshold(loss, -1.0, window=10) is None
    assert compare.steps_to_threshold(np.zeros(5), 1.0, window=10) is None
    assert compare.steps_to_threshold(np.r_[np.nan, np.zeros(20)], 0.1, window=5) == 6


@pytest.mark.parametrize("task", sorted(compare.TASKS))
def test_evaluate_in_chunks_equals_one_batch(task):
    """The chunked test loss equals train.evaluate's on the whole test set."""
    model, T, D = "gru-after", 12, 5
    spec = compare.TASKS[task]
    params = compare.init_model(model, spec["M"], D, np.random.default_rng(0))
    head = train.init_head(D, spec["K"], np.random.default_rng(1))
    got = compare.evaluate(model, params, head, task, T)
    x, y = compare.held_out(task, T)
    want = train.evaluate(compare._MODELS[model][0], params, head, x, y, spec["loss"],
                          spec["where"], {"reset": "after"})
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    if task == "digit_sum":
        assert got["metric"] == pytest.approx(want["accuracy"], rel=1e-12)


def test_baselines_are_the_tasks():
    assert compare.baseline_loss("adding", 50) == pytest.approx(1 / 6)
    assert compare.baseline_loss("copy", 25) == pytest.approx(5 * math.log(8) / 25)
    assert compare.chance_metric("digit_sum") == pytest.approx(0.1)


@pytest.mark.parametrize("model", ["rnn", "lstm-b0", "gru-after"])
@pytest.mark.parametrize("task", sorted(compare.TASKS))
def test_numpy_training_equals_torch_training(model, task):
    """The same initial parameters, batches, Adam and clipping in torch.nn + autograd
    follow the NumPy training step for step (float64)."""
    a, _ = compare.numpy_training(model, task, 12, 25, D=6)
    b, _ = compare.torch_training(model, task, 12, 25, D=6)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=0)


def test_same_seed_same_batches_for_every_model():
    """Parameters and head come from their own generators: the batches do not depend on
    the model or its size, so seeds pair the models."""
    seen = []
    for model, D in (("rnn", 65), ("lstm-b1", 32)):
        config = compare._config("digit_sum", 10, model, "hidden", D, 3)
        config["steps"] = 3
        batches = []
        task = compare.make_task("digit_sum", 10, compare.N)

        def recording(rng, task=task, batches=batches):
            x, y = task(rng)
            batches.append(y.copy())
            return x, y
        cell, _, _, kwargs, _ = compare._MODELS[model]
        spec = compare.TASKS["digit_sum"]
        train.fit(cell, compare.init_model(model, 10, D, np.random.default_rng([3, 0])),
                  recording, 3, lr=0.01, optimizer="adam", loss=spec["loss"],
                  head=train.init_head(D, 19, np.random.default_rng([3, 1])), seed=3,
                  progress=False)
        seen.append(np.array(batches))
    np.testing.assert_array_equal(seen[0], seen[1])


# ---- the grid and its committed results ----------------------------------------------

def test_configs():
    configs = compare.configs()
    keys = [experiments.key(c) for c in configs]
    assert len(set(keys)) == len(keys)
    for task in compare.TASKS:
        mine = [c for c in configs if c["task"] == task
                and c["sizing"] in ("hidden", "params")]
        M, K = compare.TASKS[task]["M"], compare.TASKS[task]["K"]
        budget = compare.n_params("lstm-b1", M, compare.D_HIDDEN, K)
        for c in mine:
            if c["sizing"] == "params":
                assert not c["model"].startswith("lstm")
                assert abs(compare.n_params(c["model"], M, c["D"], K) - budget) \
                    < 0.05 * budget
            else:
                assert c["D"] == compare.D_HIDDEN
        assert {c["seed"] for c in mine} == set(compare.SEEDS)
        assert len(mine) == len(compare.LENGTHS[task]) * 8 * len(compare.SEEDS)
        assert all(c["steps"] == compare.STEPS for c in mine)
    others = [c for c in configs if c["sizing"] not in ("hidden", "params")]
    assert len(others) == len(compare.MODELS) * len(compare.SEEDS) * (
        len(compare.SWEEP["D"]) + 1)


def committed():
    return experiments.read_rows(compare.GRID_PATH)


def test_committed_grid_is_complete():
    rows = committed()
    assert sorted(r["key"] for r in rows) == sorted(
        experiments.key(c) for c in compare.configs())
    for r in rows:
        assert r["command"].startswith("python -m rnnbook.compare grid")
        assert r["versions"]["numpy"] and r["versions"]["python"]
        assert r["config"]["seed"] in compare.SEEDS
        assert len(r["result"]["loss_curve"]) == -(-r["config"]["steps"] // compare.BLOCK)


def test_meta_records_command_seeds_versions_machine():
    meta = json.loads(compare.META_PATH.read_text())
    assert meta["seeds"] == list(compare.SEEDS)
    for run in meta["invocations"]:
        assert run["command"].startswith("python -m rnnbook.compare grid")
        assert run["versions"]["numpy"] and run["machine"]["simd"] is not None


def test_rerun_reproduces_a_committed_row_exactly():
    """The cheapest row is trained again from its configuration: every field of its
    result (test loss and accuracy, steps to threshold, the learning curve) must be
    what the grid wrote. Wall-clock time is kept outside the result.

    Bit-for-bit agreement needs the arithmetic of the machine that wrote the rows (the
    same NumPy SIMD paths and BLAS kernel): training is chaotic, and a last-bit change
    moves a run's final accuracy by tens of points. On another machine the test skips
    and says why."""
    rows = [r for r in committed() if r["config"]["task"] == "digit_sum"
            and r["config"]["T"] == 10 and r["config"]["model"] == "rnn"
            and r["config"]["sizing"] == "hidden"]
    row = min(rows, key=lambda r: r["config"]["seed"])
    result = experiments.run_config(compare.GRID, row["config"])
    if result != row["result"]:
        made_on = [run["machine"] for run in
                   json.loads(compare.META_PATH.read_text())["invocations"]]
        here = compare.machine()
        if any(m != here for m in made_on):
            pytest.skip(f"the rows were made on {made_on}, this is {here}: bitwise "
                        "reproduction needs the same arithmetic")
    assert result == row["result"]


def test_committed_long_runs_continue_the_short_ones():
    """A run trained for 6000 steps repeats, for its first 1500, the 1500-step run of the
    same configuration (the same seed, the same batches): their learning curves agree
    exactly there, on any machine, because both were written by the same one."""
    rows = compare.read_results()
    for long in compare.select(rows, sizing="long"):
        short = compare.select(rows, task=long["task"], T=long["T"],
                               model=long["model"], sizing="hidden",
                               seed=long["seed"])[0]
        n = len(short["loss_curve"])
        assert long["loss_curve"][:n] == short["loss_curve"]
        if short["steps_to_threshold"] is not None:
            assert long["steps_to_threshold"] == short["steps_to_threshold"]


def test_read_results_flattens_rows():
    flat = compare.read_results()
    assert len(flat) == len(compare.configs())
    assert all(f["ms_per_step"] > 0 for f in flat)


def test_speed_file():
    speed = json.loads(compare.SPEED_PATH.read_text())
    assert set(speed["numpy"]) == set(compare.MODELS)
    assert set(speed["torch"]) == set(compare.SPEED_TORCH)
    for by_length in speed["torch"].values():
        for entry in by_length.values():
            assert entry["max_loss_difference_100_steps"] < 1e-8
            assert entry["numpy_ms"] > 0 and entry["torch64_ms"] > 0
    assert speed["command"].startswith("python -m rnnbook.compare speed")


# ---- what the digit-sum runs train on ---------------------------------------------------

@pytest.mark.parametrize("T", [3, 4, 5])
def test_digit_sum_sequences_counts_every_possible_input(T):
    rng = np.random.default_rng(T)
    x, _ = compare.make_task("digit_sum", T, 200_000)(rng)
    drawn = {bytes(row) for row in x.argmax(axis=-1).T.astype(np.int8)}
    assert len(drawn) == compare.digit_sum_sequences(T)   # all of them, no more


def test_digit_sum_coverage_sees_the_batches_fit_trains_on():
    seen = []

    def recording(rng):
        x, y = compare.make_task("digit_sum", 6, compare.N)(rng)
        seen.extend(bytes(row) for row in x.argmax(axis=-1).T.astype(np.int8))
        return x, y

    config = {**compare._config("digit_sum", 6, "rnn", "hidden", 4, seed=3),
              "steps": 7}
    params = compare.init_model("rnn", 10, 4, np.random.default_rng([3, 0]))
    head = train.init_head(4, 19, np.random.default_rng([3, 1]))
    train.fit(compare.rnn, params, recording, 7, lr=config["lr"],
              optimizer="adam", loss="cross_entropy", head=head,
              clip=config["clip"], seed=3, progress=False)
    got = compare.digit_sum_coverage(6, seed=3, steps=7)
    assert got["drawn"] == len(seen) == 7 * compare.N
    assert got["distinct"] == len(set(seen))
    x, _ = compare.held_out("digit_sum", 6)
    test = [bytes(row) for row in x.argmax(axis=-1).T.astype(np.int8)]
    assert got["test_seen"] == sum(t in set(seen) for t in test) / len(test)
