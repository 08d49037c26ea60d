"""Graded checks of exercises/06_gru_or_lstm.ipynb, read by `rnnbook grade` in the
grader's process only (never inside a student's notebook). See rnnbook.grading.Check.

The three counting functions are called with sizes drawn from the grader's secret seed
(larger and more varied than the self-checks'). The references are written here, from
the shapes of the arrays each cell's equations use, not from a formula: a parameter
count is the total size of those arrays, and a FLOP count adds 2 m n k for every
matrix product of an m x k by a k x n matrix that the forward and backward passes
compute. The functions must be the student's own: while they run, rnnbook.compare (the
chapter's counting module) may not.
"""
import math

from rnnbook.grading import Check, HandWritten

CELLS = ("rnn", "lstm", "gru", "lstm-peephole", "lstm-cifg", "gru-minimal")
BLOCKS = {"rnn": "h", "lstm": "ifoc", "gru": "zrh", "lstm-peephole": "ifoc",
          "lstm-cifg": "foc", "gru-minimal": "zh"}
RULE = HandWritten(forbid=("rnnbook.compare",))


def _shapes(cell, M, D, K, biases):
    """The shapes of every parameter array of ``cell`` and of a K-output head."""
    shapes = []
    for _ in BLOCKS[cell]:
        shapes += [(D, M), (D, D)] + [(D,)] * biases
    if cell == "lstm-peephole":
        shapes += [(D,)] * 3          # diagonal peepholes p_i, p_f (c_{t-1}), p_o (c_t)
    if K:
        shapes += [(K, D), (K,)]
    return shapes


def _count(cell, M, D, K, biases):
    total = 0
    for shape in _shapes(cell, M, D, K, biases):
        size = 1
        for s in shape:
            size *= s
        total += size
    return total


def _products(cell, T, N, M, D):
    """(sequential, parallel) matrix products of one forward and backward pass, as
    (m, k, n) triples: per step U h_{t-1} (forward) and U^T delta_t (backward) for
    every block; over all steps at once W x (forward), dW, dU, dx (backward)."""
    G = len(BLOCKS[cell])
    sequential = [(N, D, G * D)] * T + [(N, G * D, D)] * T
    parallel = [(T * N, M, G * D),            # W x_t for every t
                (G * D, T * N, M),            # dW = sum_t delta_t x_t^T
                (G * D, T * N, D),            # dU = sum_t delta_t h_{t-1}^T
                (T * N, G * D, M)]            # dx_t = W^T delta_t
    return sequential, parallel


def _flops(products):
    return sum(2 * m * k * n for m, k, n in products)


# ---- Task 1: param_count(cell, M, D, K, biases) ----------------------------------------
# Each cell is graded with one bias per block and, in a check of its own, with two: a
# function that ignores ``biases`` (or adds it wrongly) fails one of the pair.

def _param_inputs(cell, biases):
    def inputs(rng):
        return {"args": [cell, int(rng.integers(1, 60)), int(rng.integers(1, 400)),
                         int(rng.integers(0, 40)), biases]}
    return inputs


def _param_reference(case):
    return {"count": _count(*case["args"])}


# ---- Task 2: largest_state_size(cell, M, budget, K) ------------------------------------
# The budgets sit where mistakes show: exactly a cell's count (which fits: ``<`` instead
# of ``<=`` fails), one below it, and counts near 10^17, where a float square root is off
# by more than one and where counting up from D = 1 takes too long. The reference solves
# the quadratic in exact integers (math.isqrt) and is checked against _count.

def _coefficients(cell, M, K):
    """param_count(cell, M, D, K, 1) = a D^2 + b D + K, read off _count."""
    c0, c1, c2 = (_count(cell, M, D, K, 1) for D in (0, 1, 2))
    a = (c2 - 2 * c1 + c0) // 2
    return a, c1 - c0 - a, c0


def _largest_exact(cell, M, budget, K):
    a, b, c = _coefficients(cell, M, K)
    if budget < c + a + b:
        return 0
    D = (math.isqrt(b * b + 4 * a * (budget - c)) - b) // (2 * a)
    while _count(cell, M, D + 1, K, 1) <= budget:
        D += 1
    while _count(cell, M, D, K, 1) > budget:
        D -= 1
    return D


def _largest_inputs(cell, low, high, offset):
    """A budget equal to the count of a drawn D, plus ``offset`` (0 or -1)."""
    def inputs(rng):
        M, K = int(rng.integers(1, 60)), int(rng.integers(0, 40))
        D = int(rng.integers(low, high))
        return {"args": [cell, M, _count(cell, M, D, K, 1) + offset, K]}
    return inputs


def _small_inputs(cell):
    def inputs(rng):
        M, K = int(rng.integers(1, 60)), int(rng.integers(0, 40))
        return {"args": [cell, M, int(rng.integers(1, _count(cell, M, 1, K, 1))), K]}
    return inputs


def _largest_reference(case):
    return {"D": _largest_exact(*case["args"])}


# ---- Task 3: training_flops(cell, T, N, M, D) -> (sequential, parallel) ----------------

def _flops_inputs(cell):
    def inputs(rng):
        return {"args": [cell] + [int(rng.integers(1, high)) for high in (200, 128, 60,
                                                                        400)]}
    return inputs


def _flops_reference(case):
    sequential, parallel = _products(*case["args"])
    return {"sequential": _flops(sequential), "parallel": _flops(parallel)}


CHECKS = (
    [Check(f"param_count {cell}, {biases} bias{'es' if biases == 2 else ''} per block",
           points=0.5, function="param_count", inputs=_param_inputs(cell, biases),
           reference=_param_reference, outputs={"count": ()}, hand_written=RULE)
     for cell in CELLS for biases in (1, 2)]
    + [Check(f"largest_state_size {cell}{note}", points=1,
             function="largest_state_size", inputs=inputs,
             reference=_largest_reference, outputs={"D": ()}, tol=1e-12,
             hand_written=RULE)
       for cell, inputs, note in (
           ("lstm", _largest_inputs("lstm", 2, 2_000, 0),
            ", a budget equal to a count"),
           ("gru", _largest_inputs("gru", 2, 2_000, -1),
            ", a budget one below a count"),
           ("lstm-peephole", _largest_inputs("lstm-peephole", 10**8, 10**9, 0),
            ", a budget near 10^17 equal to a count"),
           ("gru-minimal", _largest_inputs("gru-minimal", 10**8, 10**9, -1),
            ", a budget near 10^17 one below a count"),
           ("rnn", _small_inputs("rnn"), ", a budget too small"))]
    + [Check(f"training_flops {cell}", points=1.5, function="training_flops",
             inputs=_flops_inputs(cell), reference=_flops_reference,
             outputs={"sequential": (0,), "parallel": (1,)}, hand_written=RULE)
       for cell in CELLS]
)
