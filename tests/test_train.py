"""rnnbook.train: the heads against torch autograd and central differences, SGD and Adam
against torch.optim in float64, and fit against the same training written in torch
(with torch's clipping), for one- and two-state cells; divergence; bad input."""
import functools
import types
import warnings

import numpy as np
import pytest
import torch

from rnnbook import clip, reference, residual, rnn, tasks, train
from rnnbook.gradcheck import numerical_gradient, rel_error


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---- losses and heads -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 7), (1, 1)])
def test_cross_entropy_matches_torch(shape):
    r = np.random.default_rng(0)
    logits = 3 * r.normal(size=shape)
    y = r.integers(0, shape[-1], size=shape[:-1])
    loss, dlogits = train.cross_entropy(logits, y)
    lt = t64(logits, grad=True)
    ref = torch.nn.functional.cross_entropy(lt.reshape(-1, shape[-1]),
                                            torch.tensor(y.reshape(-1)))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12 * max(1, abs(ref.item()))
    assert rel_error(dlogits, lt.grad.numpy()) < 1e-12


def test_cross_entropy_is_stable_for_large_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-800.0, 700.0, 699.0]])
    loss, d = train.cross_entropy(logits, np.array([1, 2]))
    ref = torch.nn.functional.cross_entropy(t64(logits), torch.tensor([1, 2]))
    assert np.isfinite(loss) and abs(loss - ref.item()) < 1e-9 * ref.item()
    assert np.all(np.isfinite(d))


@pytest.mark.parametrize("shape", [(5, 1), (4, 6, 2)])
def test_mse_matches_torch(shape):
    r = np.random.default_rng(1)
    pred, y = r.normal(size=shape), r.normal(size=shape)
    loss, dpred = train.mse(pred, y)
    pt = t64(pred, grad=True)
    ref = torch.nn.functional.mse_loss(pt, t64(y))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-13
    assert rel_error(dpred, pt.grad.numpy()) < 1e-13


def head_case(loss, where, T=4, N=3, D=5, K=3, seed=2):
    r = np.random.default_rng(seed)
    head = {"V": r.normal(size=(K, D)), "c": r.normal(size=K)}
    hs = r.normal(size=(T, N, D))
    lead = (N,) if where == "last" else (T, N)
    y = r.integers(0, K, size=lead) if loss == "cross_entropy" \
        else r.normal(size=lead + (K,))
    return head, hs, y


@pytest.mark.parametrize("loss", train.LOSSES)
@pytest.mark.parametrize("where", train.WHERE)
def test_head_loss_gradients_twice(loss, where):
    """dhs, dV, dc against torch autograd and against central differences."""
    head, hs, y = head_case(loss, where)
    value, dhs, dhead, out = train.head_loss(head, hs, y, loss, where)
    # torch
    V, c, h = t64(head["V"], True), t64(head["c"], True), t64(hs, True)
    o = (h[-1] if where == "last" else h) @ V.T + c
    if loss == "mse":
        ref = torch.nn.functional.mse_loss(o, t64(y))
    else:
        K = o.shape[-1]
        ref = torch.nn.functional.cross_entropy(o.reshape(-1, K),
                                                torch.tensor(y).reshape(-1))
    ref.backward()
    assert abs(value - ref.item()) < 1e-12
    assert rel_error(out, o.detach().numpy()) < 1e-13
    assert rel_error(dhs, h.grad.numpy()) < 1e-12
    assert rel_error(dhead["V"], V.grad.numpy()) < 1e-12
    assert rel_error(dhead["c"], c.grad.numpy()) < 1e-12
    # central differences
    def f():
        return train.head_loss(head, hs, y, loss, where)[0]
    assert rel_error(dhs, numerical_gradient(f, hs)) < 1e-7
    for k in head:
        assert rel_error(dhead[k], numerical_gradient(f, head[k])) < 1e-7, k


def test_head_loss_does_not_modify_inputs():
    head, hs, y = head_case("mse", "all")
    copies = {k: v.copy() for k, v in head.items()}, hs.copy(), y.copy()
    train.head_loss(head, hs, y, "mse", "all")
    assert all(np.array_equal(head[k], copies[0][k]) for k in head)
    assert np.array_equal(hs, copies[1]) and np.array_equal(y, copies[2])


@pytest.mark.parametrize("call,message", [
    (lambda h, hs, y: train.head_loss(h, hs, y, "l1"), r"loss must be one of"),
    (lambda h, hs, y: train.head_loss(h, hs, y, "mse", "first"), r"where must be one of"),
    (lambda h, hs, y: train.head_loss(h, hs, y[:2], "mse"), r"y must have the shape"),
    (lambda h, hs, y: train.head_loss({"V": h["V"]}, hs, y), r"missing \['c'\]"),
    (lambda h, hs, y: train.head_loss({**h, "V": h["V"][:, :2]}, hs, y),
     r"head\['V'\] must have shape \(K, D\)"),
    (lambda h, hs, y: train.head_loss(h, hs[0], y), r"hs must have 3 dimensions"),
    (lambda h, hs, y: train.cross_entropy(np.zeros((3, 2)), np.array([0, 1, 2])),
     r"labels in 0..1"),
    (lambda h, hs, y: train.cross_entropy(np.zeros((3, 2)), np.zeros(3)),
     r"integer class labels"),
    (lambda h, hs, y: train.cross_entropy(np.zeros((3, 2)), np.zeros(2, int)),
     r"y must have shape \(3,\)"),
])
def test_head_rejects(call, message):
    head, hs, y = head_case("mse", "last")
    with pytest.raises(ValueError, match=message):
        call(head, hs, y)


# ---- optimizers -------------------------------------------------------------------------

def optimizer_case(seed=3):
    r = np.random.default_rng(seed)
    params = {"U": r.normal(size=(4, 4)), "b": r.normal(size=4)}
    grads = [{k: r.normal(size=v.shape) for k, v in params.items()} for _ in range(6)]
    return params, grads


def torch_updates(make, params, grads):
    tp = {k: t64(v, True) for k, v in params.items()}
    opt = make(list(tp.values()))
    for g in grads:
        for k, p in tp.items():
            p.grad = t64(g[k])
        opt.step()
    return {k: p.detach().numpy() for k, p in tp.items()}


def our_updates(opt, params, grads):
    for g in grads:
        params = opt.step(params, g)
    return params


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1},
                                    {"betas": (0.5, 0.9), "eps": 1e-3},
                                    {"betas": (0.0, 0.0)}])
def test_adam_matches_torch(kwargs):
    params, grads = optimizer_case()
    ours = our_updates(train.Adam(0.05, **kwargs), params, grads)
    ref = torch_updates(lambda p: torch.optim.Adam(p, lr=0.05, **kwargs), params, grads)
    for k in params:
        assert rel_error(ours[k], ref[k]) < 1e-14, k


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"weight_decay": 0.01},
                                    {"momentum": 0.5, "weight_decay": 0.2}])
def test_sgd_matches_torch(kwargs):
    params, grads = optimizer_case()
    ours = our_updates(train.SGD(0.1, **kwargs), params, grads)
    ref = torch_updates(lambda p: torch.optim.SGD(p, lr=0.1, **kwargs), params, grads)
    for k in params:
        assert rel_error(ours[k], ref[k]) < 1e-14, k


def test_optimizers_are_pure():
    params, grads = optimizer_case()
    copies = {k: v.copy() for k, v in params.items()}
    for opt in (train.SGD(0.1, momentum=0.9), train.Adam(0.1)):
        new = opt.step(params, grads[0])
        assert all(np.array_equal(params[k], copies[k]) for k in params)
        assert all(new[k] is not params[k] for k in params)


@pytest.mark.parametrize("make,message", [
    (lambda: train.SGD(0), r"lr must be > 0"),
    (lambda: train.SGD(-1), r"lr must be > 0"),
    (lambda: train.SGD(float("nan")), r"lr must be finite"),
    (lambda: train.SGD("0.1"), r"lr must be a number"),
    (lambda: train.SGD(0.1, momentum=-0.1), r"momentum must be >= 0"),
    (lambda: train.Adam(0.1, betas=(1.0, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
    (lambda: train.Adam(0.1, betas=0.9), r"betas must be a pair"),
    (lambda: train.Adam(0.1, eps=-1), r"eps must be >= 0"),
    (lambda: train.Adam(0.1, weight_decay=-1), r"weight_decay must be >= 0"),
])
def test_optimizer_rejects(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_step_rejects_mismatched_keys():
    params, grads = optimizer_case()
    with pytest.raises(ValueError, match=r"grads must have the keys of params"):
        train.SGD(0.1).step(params, {"U": grads[0]["U"]})


# ---- fit against the same training in torch ---------------------------------------------

def torch_fit(cell_ref, params, head, task, steps, lr, optimizer, clip_kind=None,
              threshold=None, seed=0, weight_decay=0.0, frozen=(), parts=None):
    """The training loop of train.fit written with torch: autograd, torch.optim,
    torch.nn.utils clipping; parameters named in ``frozen`` get gradients but are left
    out of the optimizer and of clipping. Returns the per-step losses and gradient norms
    (of the trained parameters); ``parts``, if a dict, receives the per-step norms of the
    cell's gradients ("cell") and of the head's ("head")."""
    p = {k: t64(v, True) for k, v in {**params, **head}.items()}
    trained = [q for k, q in p.items() if k not in frozen]
    make = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    opt = make(trained, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    losses, norms = [], []
    parts = {} if parts is None else parts
    parts.update(cell=[], head=[])
    for _ in range(steps):
        x, y = task(rng)
        D = head["V"].shape[1]
        hs = cell_ref({k: p[k] for k in params}, t64(x), torch.zeros(x.shape[1], D,
                                                                      dtype=torch.float64))
        out = hs[-1] @ p["V"].T + p["c"]
        loss = torch.nn.functional.mse_loss(out, t64(y))
        opt.zero_grad()
        for q in p.values():
            q.grad = None
        loss.backward()
        norms.append(float(torch.sqrt(sum((q.grad ** 2).sum() for q in trained))))
        for part, keys in (("cell", params), ("head", head)):
            parts[part].append(float(torch.sqrt(sum((p[k].grad ** 2).sum()
                                                    for k in keys))))
        if clip_kind == "norm":
            torch.nn.utils.clip_grad_norm_(trained, threshold)
        elif clip_kind == "value":
            torch.nn.utils.clip_grad_value_(trained, threshold)
        opt.step()
        losses.append(loss.item())
    return np.array(losses), np.array(norms), {k: v.detach().numpy() for k, v in p.items()}


CASES = [  # cell, reference, optimizer, lr, clip kind, threshold, weight decay
    (rnn, reference.rnn, "sgd", 0.1, None, None, 0.0),
    (rnn, reference.rnn, "sgd", 2.0, "norm", 0.5, 0.0),
    (residual, reference.residual, "sgd", 0.5, "norm", 1.0, 1e-3),
    (residual, reference.residual, "adam", 0.02, "value", 0.05, 0.0),
    (rnn, reference.rnn, "adam", 0.05, "norm", 0.3, 0.01),
]


@pytest.mark.parametrize("cell,ref,optimizer,lr,kind,threshold,wd", CASES,
                         ids=[f"{c.__name__.split('.')[-1]}-{o}-{k}" for c, _, o, _, k, _, _
                              in CASES])
def test_fit_matches_torch_training(cell, ref, optimizer, lr, kind, threshold, wd):
    r = np.random.default_rng(4)
    params = train.init_params(cell.PARAMS, 2, 6, r, scale=0.8)
    head = train.init_head(6, 1, r)
    task = functools.partial(tasks.adding, T=8, N=5)
    clip_arg = {None: None, "norm": threshold,
                "value": lambda g: clip.clip_grad_value(g, threshold)}[kind]
    result = train.fit(cell, params, task, 25, lr=lr, optimizer=optimizer, head=head,
                       clip=clip_arg, weight_decay=wd, seed=5, progress=False)
    losses, norms, final = torch_fit(ref, params, head, task, 25, lr, optimizer, kind,
                                     threshold, seed=5, weight_decay=wd)
    assert result.diverged_at is None
    assert rel_error(result.history["loss"], losses) < 1e-10
    assert rel_error(result.history["grad_norm"], norms) < 1e-10
    for k in params:
        assert rel_error(result.params[k], final[k]) < 1e-10, k
    for k in head:
        assert rel_error(result.head[k], final[k]) < 1e-10, k
    if kind == "norm":     # torch scales when its factor tau / (norm + 1e-6) is below 1
        fired = result.history["clipped"] == 1.0
        assert fired.any(), "the case is meant to clip"
        np.testing.assert_array_equal(
            fired, threshold / (result.history["grad_norm"] + 1e-6) < 1.0)
    cell_and_head = np.hypot(result.history["grad_norm_cell"],
                             result.history["grad_norm_head"])
    assert rel_error(cell_and_head, result.history["grad_norm"]) < 1e-12
    if kind is None:
        assert np.all(result.history["clipped"] == 0.0)


@pytest.mark.parametrize("cell,ref,lr", [(rnn, reference.rnn, 1.0),
                                         (residual, reference.residual, 0.1)],
                         ids=["rnn", "residual"])
@pytest.mark.parametrize("kind", [None, "norm"])
def test_fit_with_a_frozen_head_matches_torch(kind, cell, ref, lr):
    """frozen=("V", "c"): the head keeps its initial values, its gradient is recorded
    apart (grad_norm_head) but neither clipped nor counted in grad_norm, which is then
    the cell's (grad_norm_cell); the cell trains as torch trains it. Both cells of
    chapter 03."""
    r = np.random.default_rng(14)
    params = train.init_params(cell.PARAMS, 2, 6, r, scale=0.8)
    head = train.init_head(6, 1, r)
    task = functools.partial(tasks.adding, T=8, N=5)
    result = train.fit(cell, params, task, 20, lr=lr, head=head, clip=kind and 0.3,
                       seed=5, progress=False, frozen=("V", "c"))
    parts = {}
    losses, norms, final = torch_fit(ref, params, head, task, 20, lr, "sgd",
                                     kind, 0.3, seed=5, frozen=("V", "c"), parts=parts)
    h = result.history
    assert result.diverged_at is None
    assert rel_error(h["loss"], losses) < 1e-10
    assert rel_error(h["grad_norm"], norms) < 1e-10
    assert rel_error(h["grad_norm_cell"], parts["cell"]) < 1e-10
    assert rel_error(h["grad_norm_head"], parts["head"]) < 1e-10
    np.testing.assert_array_equal(h["grad_norm"], h["grad_norm_cell"])
    for k in params:
        assert rel_error(result.params[k], final[k]) < 1e-10, k
    for k in head:
        np.testing.assert_array_equal(result.head[k], head[k])
    assert (kind is None) == (not np.any(h["clipped"] == 1.0))


def test_fit_clipped_flag_is_torchs_factor_below_one():
    """The flag says whether torch's factor max_norm / (norm + 1e-6) is below 1: a
    threshold equal to the norm still scales (by a hair); one 1e-6 above does not."""
    r = np.random.default_rng(15)
    params = train.init_params(rnn.PARAMS, 2, 4, r)
    task = functools.partial(tasks.adding, T=4, N=3)
    norm = train.fit(rnn, params, task, 1, lr=0.1, seed=2,
                     progress=False).history["grad_norm"][0]
    for threshold, fired in ((norm, 1.0), (norm + 1e-6, 0.0), (0.5 * norm, 1.0)):
        h = train.fit(rnn, params, task, 1, lr=0.1, seed=2, clip=threshold,
                      progress=False).history
        assert h["clipped"][0] == fired, threshold


def test_fit_records_cell_and_head_norms_apart():
    r = np.random.default_rng(16)
    params = train.init_params(residual.PARAMS, 2, 5, r)
    head = train.init_head(5, 1, r)
    task = functools.partial(tasks.adding, T=6, N=4)
    h = train.fit(residual, params, task, 1, lr=0.1, head=head, seed=3,
                  progress=False).history
    x, y = task(np.random.default_rng(3))
    hs, cache = residual.forward(params, x, np.zeros((4, 5)))
    _, dhs, dhead, _ = train.head_loss(head, hs, y)
    dcell = residual.backward(dhs, cache)[2]
    assert h["grad_norm_cell"][0] == pytest.approx(clip.global_norm(dcell), rel=1e-12)
    assert h["grad_norm_head"][0] == pytest.approx(clip.global_norm(dhead), rel=1e-12)


def test_fit_learns_the_adding_problem():
    """Below the mean predictor's 1/6 on short sequences: the loop really trains."""
    r = np.random.default_rng(6)
    params = train.init_params(rnn.PARAMS, 2, 16, r)
    result = train.fit(rnn, params, functools.partial(tasks.adding, T=6, N=32), 600,
                       lr=0.01, optimizer="adam", seed=6, progress=False)
    assert np.mean(result.history["loss"][:20]) > 0.12
    assert np.mean(result.history["loss"][-50:]) < 0.3 * tasks.ADDING_BASELINE_MSE


def test_fit_cross_entropy_records_accuracy():
    r = np.random.default_rng(7)
    params = train.init_params(residual.PARAMS, 10, 8, r)
    result = train.fit(residual, params, functools.partial(tasks.digit_sum, T=4, N=16),
                       30, lr=0.01, optimizer="adam", loss="cross_entropy",
                       outputs=19, progress=False)
    acc = result.history["accuracy"]
    assert acc.shape == (30,) and np.all((acc >= 0) & (acc <= 1))
    assert result.head["V"].shape == (19, 8)
    ev = train.evaluate(residual, result.params, result.head,
                        *tasks.digit_sum(r, 4, 16), loss="cross_entropy")
    assert set(ev) == {"loss", "accuracy"}


def fake_two_state_cell():
    """A cell with two states (h0, c0), like the LSTM: the rnn, with c_t = c_{t-1} + h_t
    carried alongside and read by nothing (so dc0 = 0)."""
    def forward(params, x, h0, c0, scale=1.0):
        assert scale == 2.0, "cell_kwargs must reach forward"
        hs, cache = rnn.forward(params, x, h0)
        return hs, (cache, c0)

    def backward(dhs, cache):
        dx, dh0, dparams = rnn.backward(dhs, cache[0])
        return dx, dh0, np.zeros_like(cache[1]), dparams
    return types.SimpleNamespace(forward=forward, backward=backward, __name__="fake")


def test_fit_handles_two_states_and_cell_kwargs():
    r = np.random.default_rng(8)
    params = train.init_params(rnn.PARAMS, 2, 5, r)
    task = functools.partial(tasks.adding, T=5, N=4)
    two = train.fit(fake_two_state_cell(), params, task, 10, lr=0.1, seed=1,
                    cell_kwargs={"scale": 2.0}, progress=False)
    one = train.fit(rnn, params, task, 10, lr=0.1, seed=1, progress=False)
    np.testing.assert_array_equal(two.history["loss"], one.history["loss"])


def test_fit_is_seeded_and_pure():
    r = np.random.default_rng(9)
    params = train.init_params(rnn.PARAMS, 2, 5, r)
    copies = {k: v.copy() for k, v in params.items()}
    task = functools.partial(tasks.adding, T=5, N=4)
    a = train.fit(rnn, params, task, 15, lr=0.1, seed=3, progress=False)
    b = train.fit(rnn, params, task, 15, lr=0.1, seed=3, progress=False)
    c = train.fit(rnn, params, task, 15, lr=0.1, seed=4, progress=False)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    assert not np.array_equal(a.history["loss"], c.history["loss"])
    assert all(np.array_equal(params[k], copies[k]) for k in params)


def test_fit_stops_at_divergence_without_warnings():
    """A learning rate that explodes: the loop stops at the first non-finite loss or
    gradient (or parameter), says where, leaves NaN after it, and prints no warning."""
    r = np.random.default_rng(10)
    params = train.init_params(residual.PARAMS, 2, 16, r, scale=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = train.fit(residual, params, functools.partial(tasks.adding, T=40, N=8),
                           200, lr=50.0, seed=0, progress=False)
    s = result.diverged_at
    assert s is not None and s < 200
    assert np.all(np.isnan(result.history["grad_norm"][s + 1:]))
    assert np.all(np.isfinite(result.history["loss"][:s]))
    assert all(np.all(np.isfinite(v)) for v in result.params.values())


def test_fit_shows_a_progress_bar(capsys):
    r = np.random.default_rng(11)
    params = train.init_params(rnn.PARAMS, 2, 3, r)
    train.fit(rnn, params, functools.partial(tasks.adding, T=3, N=2), 5, lr=0.1,
              progress=True, desc="demo")
    assert "demo" in capsys.readouterr().err


def test_init_params_and_head():
    r = np.random.default_rng(12)
    p = train.init_params(rnn.PARAMS, 3, 16, r)
    assert {k: v.shape for k, v in p.items()} == {"U": (16, 16), "W": (16, 3), "b": (16,)}
    assert max(np.abs(v).max() for v in p.values()) <= 0.25
    h = train.init_head(16, 4, r, scale=0.01)
    assert h["V"].shape == (4, 16) and h["c"].shape == (4,)
    assert np.abs(h["V"]).max() <= 0.01


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -1.0}, r"lr must be > 0"),
    ({"optimizer": "rmsprop"}, r"optimizer must be 'sgd', 'adam'"),
    ({"clip": -1.0}, r"clip must be a finite number >= 0"),
    ({"loss": "hinge"}, r"loss must be one of"),
    ({"where": "middle"}, r"where must be one of"),
    ({"steps": -1}, r"steps must be an integer >= 0"),
    ({"task": "adding"}, r"task must be a function"),
    ({"loss": "cross_entropy"}, r"outputs \(the number of classes\) is needed"),
    ({"head": {"V": np.zeros((1, 3))}}, r"missing \['c'\]"),
    ({"cell": np}, r"cell must be a module with forward and backward"),
    ({"params": {"U": np.zeros((4, 4)), "W": np.zeros((4, 2)), "b": np.zeros(4),
                 "V": np.zeros(4)}}, r"must not use the head's keys"),
    ({"frozen": "V"}, r"frozen must be a list of parameter names"),
    ({"frozen": [1]}, r"frozen must be a list of parameter names"),
    ({"frozen": ["Q"]}, r"frozen must name parameters among"),
    ({"frozen": ["U", "W", "b", "V", "c"]}, r"frozen must leave at least one"),
])
def test_fit_rejects(kwargs, message):
    r = np.random.default_rng(13)
    args = {"cell": rnn, "params": train.init_params(rnn.PARAMS, 2, 4, r),
            "task": functools.partial(tasks.adding, T=3, N=2), "steps": 2, "lr": 0.1,
            "progress": False}
    if kwargs.get("loss") == "cross_entropy":
        args["task"] = functools.partial(tasks.digit_sum, T=3, N=2)
        args["params"] = train.init_params(rnn.PARAMS, 10, 4, r)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train.fit(**args)
