"""Seeded long-dependency tasks, time-major, shared by chapters 03-06.

Every generator takes a NumPy Generator first and returns one batch ``(x, y)``:

    x, y = tasks.adding(rng, T, N)        x (T, N, 2) float64,  y (N, 1) float64
    x, y = tasks.digit_sum(rng, T, N)     x (T, N, 10) one-hot, y (N,) int in 0..18
    x, y = tasks.copy(rng, T, N, length=5, symbols=8)
                                          x (T, N, symbols + 2) one-hot,
                                          y (T, N) int in 0..symbols

and each has the loss of the best answer that ignores the long dependency (the
*baseline* a network must beat to show that it remembers anything):

    tasks.ADDING_BASELINE_MSE             1/6: always predict the mean, 1
    tasks.digit_sum_baseline()            cross-entropy and accuracy of the label's prior
    tasks.copy_baseline(T, length, symbols)

``y`` fits the loss heads of ``rnnbook.train``: ``adding`` with ``loss="mse",
where="last"``, ``digit_sum`` with ``loss="cross_entropy", where="last"``, ``copy`` with
``loss="cross_entropy", where="all"``. To give a generator fixed sizes, use
``functools.partial(tasks.adding, T=50, N=32)``: ``rnnbook.train.fit`` calls it with
the rng only. Bad arguments raise ValueError naming the argument.

The adding problem (Hochreiter and Schmidhuber 1997; in the form of Arjovsky et al.
2016): at each step two numbers, a value u_t ~ U(0, 1) and a marker in {0, 1}. Exactly
two markers are 1, one at a random step of the first half (t < T // 2) and one of the
second half; the target is the sum of the two marked values. Predicting the constant 1
(the mean of the target) has mean squared error Var(u_a + u_b) = 2/12 = 1/6.

The digit-sum memory task (the NNDL practice book, chapter 6): a sequence of T digits
whose first two are random and all others 0, except that one random position after the
first two is overwritten by a random digit (a distractor, 0-9). The label is the sum of
the first two digits, one of 19 classes 0..18. Digits are fed one-hot (an embedding of
one-hot inputs is the input matrix W itself).

The copy task (Hochreiter and Schmidhuber 1997; Arjovsky et al. 2016, with T the whole
sequence length): the first ``length`` steps show random symbols 1..symbols, then blanks
(0), then at step T - length - 1 a delimiter (symbols + 1), then blanks. The target is
blank (0) everywhere except the last ``length`` steps, where it is the symbols shown at
the start, in order. The delay between seeing a symbol and recalling it is T - length.
"""
import math

import numpy as np

ADDING_BASELINE_MSE = 1.0 / 6.0   # Var(u_a + u_b), u ~ U(0, 1): the mean predictor's MSE
DIGIT_CLASSES = 19                # sums 0..18


def _int(name, value, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def _rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator "
                         f"(np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _one_hot(indices, size):
    out = np.zeros(indices.shape + (size,))
    np.put_along_axis(out, indices[..., None], 1.0, axis=-1)
    return out


def adding(rng, T, N):
    """One batch of the adding problem.

    rng -- numpy Generator; T -- steps (>= 2); N -- sequences in the batch (>= 1)
    Returns x (T, N, 2): x[t, n] = (value u_t, marker), and y (N, 1), the sum of the
    two marked values.
    """
    rng, T, N = _rng(rng), _int("T", T, 2), _int("N", N, 1)
    values = rng.uniform(0.0, 1.0, size=(T, N))
    first = rng.integers(0, T // 2, size=N)           # one marker in the first half
    second = rng.integers(T // 2, T, size=N)          # one in the second half
    markers = np.zeros((T, N))
    markers[first, np.arange(N)] = 1.0
    markers[second, np.arange(N)] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values * markers).sum(axis=0)[:, None]
    return x, y


def digit_sum(rng, T, N):
    """One batch of the digit-sum memory task.

    rng -- numpy Generator; T -- steps (>= 3); N -- sequences (>= 1)
    Returns x (T, N, 10), the digits one-hot, and y (N,) int, the sum of the first two
    digits (0..18).
    """
    rng, T, N = _rng(rng), _int("T", T, 3), _int("N", N, 1)
    digits = np.zeros((T, N), dtype=np.int64)
    digits[:2] = rng.integers(0, 10, size=(2, N))
    where = rng.integers(2, T, size=N)                # the distractor's position
    digits[where, np.arange(N)] = rng.integers(0, 10, size=N)
    return _one_hot(digits, 10), digits[0] + digits[1]


def digit_sum_baseline():
    """What the label's prior alone achieves on ``digit_sum`` (no memory at all):
    {"cross_entropy": entropy of the sum of two uniform digits (nats),
     "accuracy": 0.1, always answering the most frequent sum, 9}."""
    p = np.array([10 - abs(s - 9) for s in range(DIGIT_CLASSES)]) / 100.0
    return {"cross_entropy": float(-(p * np.log(p)).sum()), "accuracy": float(p.max())}


def copy(rng, T, N, length=5, symbols=8):
    """One batch of the copy task.

    rng -- numpy Generator; T -- steps (>= 2 * length + 1); N -- sequences (>= 1)
    length -- symbols to remember (>= 1); symbols -- alphabet size (>= 1)
    Returns x (T, N, symbols + 2) one-hot (0 blank, 1..symbols, symbols + 1 the
    delimiter) and y (T, N) int in 0..symbols (0 blank, else the symbol to recall).
    """
    rng, N = _rng(rng), _int("N", N, 1)
    length, symbols = _int("length", length, 1), _int("symbols", symbols, 1)
    T = _int("T", T, 2 * length + 1)
    pattern = rng.integers(1, symbols + 1, size=(length, N))
    seq = np.zeros((T, N), dtype=np.int64)
    seq[:length] = pattern
    seq[T - length - 1] = symbols + 1                 # the delimiter: "recall now"
    y = np.zeros((T, N), dtype=np.int64)
    y[T - length:] = pattern
    return _one_hot(seq, symbols + 2), y


def copy_baseline(T, length=5, symbols=8):
    """Mean cross-entropy per step (nats) of the memoryless answer to ``copy``: blank
    before the recall, a uniform guess over the symbols during it,
    length * log(symbols) / T."""
    length, symbols = _int("length", length, 1), _int("symbols", symbols, 1)
    T = _int("T", T, 2 * length + 1)
    return length * math.log(symbols) / T
