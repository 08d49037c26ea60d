"""rnnbook.tasks: the structure of every batch, seeding, the stated baselines, bad input."""
import math

import numpy as np
import pytest

from rnnbook import tasks, train


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- the adding problem -----------------------------------------------------------------

@pytest.mark.parametrize("T,N", [(2, 1), (3, 5), (50, 64), (101, 7)])
def test_adding_structure(T, N):
    x, y = tasks.adding(rng(T), T, N)
    assert x.shape == (T, N, 2) and y.shape == (N, 1)
    assert x.dtype == y.dtype == np.float64
    values, markers = x[..., 0], x[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert set(np.unique(markers)) <= {0.0, 1.0}
    assert np.all(markers[: T // 2].sum(axis=0) == 1), "one marker in the first half"
    assert np.all(markers[T // 2:].sum(axis=0) == 1), "one marker in the second half"
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=0), rtol=0, atol=0)


def test_adding_baseline_is_the_mean_predictors_mse():
    """Predicting the constant 1 costs 1/6; 1 is the best constant (the target's mean)."""
    _, y = tasks.adding(rng(1), 20, 200_000)
    assert abs(y.mean() - 1.0) < 0.005
    assert abs(np.mean((y - 1.0) ** 2) - tasks.ADDING_BASELINE_MSE) < 0.002
    for c in (0.9, 1.1):   # any other constant does worse
        assert np.mean((y - c) ** 2) > tasks.ADDING_BASELINE_MSE + 0.005
    loss, _ = train.mse(np.ones_like(y), y)   # the head's loss is this MSE
    assert abs(loss - tasks.ADDING_BASELINE_MSE) < 0.002


def test_adding_markers_cover_each_half():
    x, _ = tasks.adding(rng(2), 10, 5000)
    positions = np.argwhere(x[..., 1] == 1)[:, 0]
    assert set(positions) == set(range(10))


# ---- the digit-sum task ---------------------------------------------------------------

@pytest.mark.parametrize("T,N", [(3, 1), (5, 8), (35, 100)])
def test_digit_sum_structure(T, N):
    x, y = tasks.digit_sum(rng(T), T, N)
    assert x.shape == (T, N, 10) and y.shape == (N,)
    assert np.issubdtype(y.dtype, np.integer)
    assert np.all(x.sum(axis=-1) == 1), "one-hot digits"
    digits = x.argmax(axis=-1)
    np.testing.assert_array_equal(y, digits[0] + digits[1])
    assert np.all((y >= 0) & (y < tasks.DIGIT_CLASSES))
    assert np.all((digits[2:] != 0).sum(axis=0) <= 1), "at most one visible distractor"


def test_digit_sum_distractor_lands_after_the_first_two():
    x, _ = tasks.digit_sum(rng(3), 6, 20_000)
    digits = x.argmax(axis=-1)
    seen = set(np.argwhere(digits[2:] != 0)[:, 0] + 2)
    assert seen == {2, 3, 4, 5}
    assert np.mean((digits[2:] != 0).sum(axis=0)) == pytest.approx(0.9, abs=0.02)


def test_digit_sum_baseline():
    """The prior of the sum is triangular; predicting it has the stated cross-entropy,
    and answering 9 always is right 10 % of the time."""
    base = tasks.digit_sum_baseline()
    _, y = tasks.digit_sum(rng(4), 3, 200_000)
    freq = np.bincount(y, minlength=19) / y.size
    prior = np.array([10 - abs(s - 9) for s in range(19)]) / 100
    assert np.max(np.abs(freq - prior)) < 0.004
    loss, _ = train.cross_entropy(np.tile(np.log(prior), (y.size, 1)), y)
    assert abs(loss - base["cross_entropy"]) < 0.01
    assert abs(np.mean(y == 9) - base["accuracy"]) < 0.003
    assert base["cross_entropy"] < math.log(19)


# ---- the copy task ----------------------------------------------------------------------

@pytest.mark.parametrize("T,N,length,symbols", [(3, 1, 1, 1), (20, 4, 5, 8), (11, 3, 5, 3)])
def test_copy_structure(T, N, length, symbols):
    x, y = tasks.copy(rng(T), T, N, length=length, symbols=symbols)
    assert x.shape == (T, N, symbols + 2) and y.shape == (T, N)
    assert np.all(x.sum(axis=-1) == 1)
    seq = x.argmax(axis=-1)
    pattern = seq[:length]
    assert np.all((pattern >= 1) & (pattern <= symbols))
    assert np.all(seq[T - length - 1] == symbols + 1), "the delimiter"
    rest = np.delete(seq, list(range(length)) + [T - length - 1], axis=0)
    assert np.all(rest == 0), "blanks elsewhere"
    np.testing.assert_array_equal(y[T - length:], pattern)
    assert np.all(y[:T - length] == 0)


def test_copy_baseline_is_the_memoryless_answer():
    """Blank before the recall, uniform over the symbols during it."""
    T, N, length, symbols = 30, 50, 5, 8
    _, y = tasks.copy(rng(5), T, N, length=length, symbols=symbols)
    logits = np.full((T, N, symbols + 1), -1e9)
    logits[:T - length, :, 0] = 0.0
    logits[T - length:, :, 1:] = 0.0
    loss, _ = train.cross_entropy(logits, y)
    assert loss == pytest.approx(tasks.copy_baseline(T, length, symbols), rel=1e-12)


# ---- seeds and bad input ----------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda r: tasks.adding(r, 12, 4), lambda r: tasks.digit_sum(r, 12, 4),
    lambda r: tasks.copy(r, 12, 4)])
def test_seeded(make):
    a, b, c = make(rng(7)), make(rng(7)), make(rng(8))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("call,message", [
    (lambda: tasks.adding(rng(), 1, 3), r"T must be an integer >= 2, got 1"),
    (lambda: tasks.adding(rng(), 10, 0), r"N must be an integer >= 1, got 0"),
    (lambda: tasks.adding(rng(), 10.0, 3), r"T must be an integer"),
    (lambda: tasks.adding(rng(), True, 3), r"T must be an integer"),
    (lambda: tasks.adding(0, 10, 3), r"rng must be a numpy.random.Generator"),
    (lambda: tasks.digit_sum(rng(), 2, 3), r"T must be an integer >= 3, got 2"),
    (lambda: tasks.digit_sum(rng(), 5, -1), r"N must be an integer >= 1"),
    (lambda: tasks.copy(rng(), 10, 3, length=5), r"T must be an integer >= 11, got 10"),
    (lambda: tasks.copy(rng(), 20, 3, length=0), r"length must be an integer >= 1"),
    (lambda: tasks.copy(rng(), 20, 3, symbols=0), r"symbols must be an integer >= 1"),
    (lambda: tasks.copy_baseline(4, length=2), r"T must be an integer >= 5"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
