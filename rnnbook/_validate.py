"""Input checks shared by every cell (rnn, residual, lstm, gru): one place, as PyTorch's
RNNBase validates every cell's inputs. Every bad input raises ValueError naming the
argument and the shape that was expected.

Shapes are checked by named dimensions. A ``Dims`` binds each letter (T, N, M, D) to the
size of the first array that has it, and checks every later array against it:

    dims = Dims()
    x = dims.array("x", x, "T N M")           # binds T, N, M
    params = dims.params("params", params, {"U": "D D", "W": "D M", "b": "D"})  # binds D
    h0 = dims.array("h0", h0, "N D")          # checked against N and D

so a new cell declares its shapes and writes no checks of its own.
"""
import numpy as np


class Dims:
    """Sizes of named dimensions, bound by the first array that has each one."""

    def __init__(self, **sizes):
        self.sizes = dict(sizes)

    def array(self, name, value, dims):
        """``value`` as a float ndarray of the named dimensions ``dims`` ("T N M").

        Float32 stays float32; other real numbers become float64. Raises ValueError
        for non-real, ragged, empty or non-finite input, the wrong number of
        dimensions, or a size that disagrees with one bound before.
        """
        letters = dims.split()
        label = "(" + ", ".join(letters) + ("," if len(letters) == 1 else "") + ")"
        a = _real_array(name, value, label)
        if a.ndim != len(letters):
            raise ValueError(f"{name} must have {len(letters)} dimensions {label}, "
                             f"got shape {a.shape}")
        if 0 in a.shape:
            raise ValueError(f"{name} must not be empty, got shape {a.shape} for {label}")
        bound = dict(self.sizes)
        for letter, got in zip(letters, a.shape):
            bound.setdefault(letter, got)
        want = tuple(bound[letter] for letter in letters)
        if a.shape != want:
            raise ValueError(f"{name} must have shape {label} = {_fmt(want)}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinity")
        self.sizes = bound
        return a

    def params(self, name, params, spec):
        """Check a dict of parameter arrays against ``spec`` {key: dims}, in spec's order.

        Returns a new dict of validated arrays; raises on a non-dict, missing or unknown keys.
        """
        if not isinstance(params, dict):
            raise ValueError(f"{name} must be a dict with keys {list(spec)}, "
                             f"got {type(params).__name__}")
        missing = [k for k in spec if k not in params]
        unknown = sorted((k for k in params if k not in spec), key=str)
        if missing or unknown:
            raise ValueError(f"{name} must have exactly the keys {list(spec)}; "
                             f"missing {missing}, unknown {unknown}")
        return {k: self.array(f"{name}['{k}']", params[k], spec[k]) for k in spec}


def common_dtype(*arrays):
    """float32 if every array is float32, else float64."""
    return np.result_type(*arrays)


def _real_array(name, value, label):
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of shape {label}: {e}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                                 or np.issubdtype(a.dtype, np.integer)
                                 or a.dtype == bool):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def _fmt(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
