"""rnnbook.clip against torch.nn.utils (norm and value clipping) and against the per-parameter
rule of Paddle's ClipGradByNorm written in torch; purity, dtypes, non-finite gradients,
bad input."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rnnbook import clip
from rnnbook.gradcheck import rel_error


def grads_case(seed=0, scale=1.0, dtype=np.float64):
    r = np.random.default_rng(seed)
    return {"U": (scale * r.normal(size=(4, 4))).astype(dtype),
            "W": (scale * r.normal(size=(4, 3))).astype(dtype),
            "b": (scale * r.normal(size=4)).astype(dtype)}


def as_torch(grads):
    """Parameters whose .grad are the arrays (torch's clipping works on .grad)."""
    params = []
    for a in grads.values():
        p = torch.zeros(a.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(a, dtype=torch.float64)
        params.append(p)
    return params


def torch_norm_clip(grads, max_norm, **kw):
    params = as_torch(grads)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, **kw)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}, float(total)


def torch_value_clip(grads, clip_value):
    params = as_torch(grads)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 3.0, 4.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = grads_case()
    ours, total = clip.clip_grad_norm(grads, max_norm)
    ref, ref_total = torch_norm_clip(grads, max_norm)
    assert abs(total - ref_total) < 1e-14 * ref_total
    for k in grads:
        assert rel_error(ours[k], ref[k]) < 1e-15, k


def test_clip_grad_norm_keeps_direction_and_bounds_the_norm():
    grads = grads_case(1, scale=10.0)
    ours, total = clip.clip_grad_norm(grads, 2.0)
    flat = np.concatenate([g.ravel() for g in grads.values()])
    new = np.concatenate([g.ravel() for g in ours.values()])
    assert total == pytest.approx(np.linalg.norm(flat), rel=1e-14)
    assert np.linalg.norm(new) <= 2.0 and np.linalg.norm(new) == pytest.approx(2.0, rel=1e-6)
    cos = new @ flat / (np.linalg.norm(new) * np.linalg.norm(flat))
    assert cos == pytest.approx(1.0, abs=1e-14)
    small, _ = clip.clip_grad_norm(grads, 2 * total)   # below the threshold: unchanged
    assert all(rel_error(small[k], grads[k]) < 1e-15 for k in grads)


@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.0, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads = grads_case(2)
    ours = clip.clip_grad_value(grads, clip_value)
    ref = torch_value_clip(grads, clip_value)
    for k in grads:
        np.testing.assert_array_equal(ours[k], ref[k])


def test_value_clipping_turns_the_direction():
    """Clamping entries of different sizes changes the gradient's direction."""
    g = {"w": np.array([10.0, 1.0])}
    clipped = clip.clip_grad_value(g, 2.0)["w"]
    cos = clipped @ g["w"] / (np.linalg.norm(clipped) * np.linalg.norm(g["w"]))
    assert cos < 0.99
    normed = clip.clip_grad_norm(g, 2.0)[0]["w"]
    assert normed @ g["w"] / (np.linalg.norm(normed) * np.linalg.norm(g["w"])) \
        == pytest.approx(1.0, abs=1e-15)


def paddle_rule_in_torch(grads, max_norm):
    """Paddle's ClipGradByNorm: each tensor with norm > max_norm becomes
    max_norm * g / norm."""
    out = {}
    for k, a in grads.items():
        g = torch.tensor(a, dtype=torch.float64)
        n = torch.linalg.vector_norm(g)
        out[k] = (g * (max_norm / n) if n > max_norm else g).numpy()
    return out


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 2.5, 50.0])
def test_per_parameter_clipping(max_norm):
    grads = grads_case(3)
    ours, norms = clip.clip_grad_norm_per_parameter(grads, max_norm)
    ref = paddle_rule_in_torch(grads, max_norm)
    for k in grads:
        assert rel_error(ours[k], ref[k]) < 1e-15, k
        assert norms[k] == pytest.approx(np.linalg.norm(grads[k]), rel=1e-14)
        assert np.linalg.norm(ours[k]) <= max_norm * (1 + 1e-12) or \
            np.array_equal(ours[k], grads[k])


def test_per_parameter_differs_from_global():
    """One large and one small gradient: per-parameter clipping keeps the small one,
    so the result points elsewhere and its norm can exceed max_norm."""
    grads = {"big": np.array([30.0, 40.0]), "small": np.array([0.6, 0.8])}
    per, _ = clip.clip_grad_norm_per_parameter(grads, 1.0)
    glob, _ = clip.clip_grad_norm(grads, 1.0)
    np.testing.assert_allclose(per["small"], grads["small"])
    assert np.linalg.norm(np.concatenate(list(per.values()))) == pytest.approx(math.sqrt(2))
    assert np.linalg.norm(glob["small"]) < 0.02


@pytest.mark.parametrize("fn", [
    lambda g: clip.clip_grad_norm(g, 1.0)[0], lambda g: clip.clip_grad_value(g, 0.5),
    lambda g: clip.clip_grad_norm_per_parameter(g, 1.0)[0]])
def test_pure_and_dtype_kept(fn):
    for dtype in (np.float64, np.float32):
        grads = grads_case(4, scale=3.0, dtype=dtype)
        copies = {k: v.copy() for k, v in grads.items()}
        out = fn(grads)
        assert all(np.array_equal(grads[k], copies[k]) for k in grads)
        assert all(out[k].dtype == dtype and out[k] is not grads[k] for k in grads)
        out["U"][...] = 7.0
        assert np.array_equal(grads["U"], copies["U"])


def torch_norm_clip_same_dtype(grads, max_norm):
    """torch's clip_grad_norm_ on gradients of the arrays' own dtypes."""
    params = []
    for a in grads.values():
        p = torch.zeros(a.shape, dtype=torch.from_numpy(a).dtype, requires_grad=True)
        p.grad = torch.from_numpy(a.copy())
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return {k: p.grad.numpy() for k, p in zip(grads, params)}, total


@pytest.mark.parametrize("scale", [3.0, 1e3, 1e20])
def test_float32_matches_torch_float32(scale):
    """Norm and factor in the gradients' dtype, as torch: with float32 entries of 1e20
    the squares overflow, the norm is inf and the gradients are multiplied by 0."""
    g32 = grads_case(5, scale=scale, dtype=np.float32)
    ours, total = clip.clip_grad_norm(g32, 0.5)
    ref, ref_total = torch_norm_clip_same_dtype(g32, 0.5)
    assert ref_total.dtype == torch.float32
    assert total == pytest.approx(ref_total.item(), rel=1e-6)
    for k in g32:
        assert ours[k].dtype == np.float32
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-6, atol=0)
    if scale == 1e20:
        assert math.isinf(total) and all(np.all(ours[k] == 0) for k in ours)
    else:   # and float32 agrees with float64 to float32's precision
        g64 = {k: v.astype(np.float64) for k, v in g32.items()}
        b, nb = clip.clip_grad_norm(g64, 0.5)
        assert total == pytest.approx(nb, rel=1e-6)
        assert all(rel_error(ours[k], b[k]) < 1e-6 for k in ours)


def test_mixed_dtypes_match_torch():
    g = grads_case(8)
    g["W"] = g["W"].astype(np.float32)
    ours, total = clip.clip_grad_norm(g, 0.5)
    ref, ref_total = torch_norm_clip_same_dtype(g, 0.5)
    assert ref_total.dtype == torch.float64     # W's float32 norm, then float64
    assert total == pytest.approx(ref_total.item(), rel=1e-6)
    for k in g:
        assert ours[k].dtype == g[k].dtype
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-6)   # float32 rounding


# ---- non-finite gradients: as torch's default, or an error when asked ---------------------

@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_gradient_as_torch(bad):
    grads = grads_case(6)
    grads["W"][1, 2] = bad
    ours, total = clip.clip_grad_norm(grads, 1.0)
    ref, ref_total = torch_norm_clip(grads, 1.0)
    assert not math.isfinite(total)
    assert (math.isnan(total) and math.isnan(ref_total)) or total == ref_total
    for k in grads:
        np.testing.assert_array_equal(ours[k], ref[k])      # NaN where torch has NaN
    with pytest.raises(ValueError, match=r"non-finite total norm"):
        clip.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):                        # torch raises too
        torch_norm_clip(grads, 1.0, error_if_nonfinite=True)
    val = clip.clip_grad_value(grads, 0.5)
    for k, v in torch_value_clip(grads, 0.5).items():
        np.testing.assert_array_equal(val[k], v)
    assert math.isnan(clip.global_norm(grads)) == math.isnan(total)


def test_global_norm():
    grads = grads_case(7)
    flat = np.concatenate([g.ravel() for g in grads.values()])
    assert clip.global_norm(grads) == pytest.approx(np.linalg.norm(flat), rel=1e-14)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       scale=st.floats(1e-3, 1e3), threshold=st.floats(0.0, 50.0),
       seed=st.integers(0, 2**31 - 1))
def test_random_cases_match_torch(sizes, scale, threshold, seed):
    r = np.random.default_rng(seed)
    grads = {f"p{i}": scale * r.normal(size=(n, 2)) for i, n in enumerate(sizes)}
    ours, total = clip.clip_grad_norm(grads, threshold)
    ref, ref_total = torch_norm_clip(grads, threshold)
    assert abs(total - ref_total) <= 1e-13 * ref_total
    assert all(rel_error(ours[k], ref[k]) < 1e-13 for k in grads)
    val, ref_val = clip.clip_grad_value(grads, threshold), torch_value_clip(grads, threshold)
    assert all(np.array_equal(val[k], ref_val[k]) for k in grads)


# ---- bad input ---------------------------------------------------------------------------

FUNCTIONS = {"norm": lambda g, t: clip.clip_grad_norm(g, t),
             "value": lambda g, t: clip.clip_grad_value(g, t),
             "per_parameter": lambda g, t: clip.clip_grad_norm_per_parameter(g, t)}
NAMES = {"norm": "max_norm", "value": "clip_value", "per_parameter": "max_norm"}


@pytest.mark.parametrize("kind", FUNCTIONS)
@pytest.mark.parametrize("grads,threshold,message", [
    ([np.ones(3)], 1.0, r"grads must be a dict of arrays, got list"),
    ({}, 1.0, r"grads must not be empty"),
    ({"U": np.array(["a", "b"])}, 1.0, r"grads\['U'\] must hold real numbers"),
    ({"U": np.ones(2) + 1j}, 1.0, r"grads\['U'\] must hold real numbers"),
    ({"U": np.ones(2)}, -0.1, r"THRESHOLD must be a finite number >= 0, got -0.1"),
    ({"U": np.ones(2)}, float("nan"), r"THRESHOLD must be a finite number >= 0"),
    ({"U": np.ones(2)}, float("inf"), r"THRESHOLD must be a finite number >= 0"),
    ({"U": np.ones(2)}, "1", r"THRESHOLD must be a number >= 0"),
    ({"U": np.ones(2)}, None, r"THRESHOLD must be a number >= 0"),
    ({"U": np.ones(2)}, True, r"THRESHOLD must be a number >= 0"),
])
def test_rejects(kind, grads, threshold, message):
    with pytest.raises(ValueError, match=message.replace("THRESHOLD", NAMES[kind])):
        FUNCTIONS[kind](grads, threshold)
