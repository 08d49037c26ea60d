"""Input checks shared by the cells: every bad input raises ValueError naming
the argument and the shape that was expected."""
import numpy as np


def array(name, value, shape, dims):
    """Return ``value`` as a float ndarray after checking it.

    name  -- the argument's name, used in error messages
    shape -- expected shape, a tuple whose entries are ints or None (any size)
    dims  -- the letters naming each axis in messages, e.g. "(T, N, M)"
    Float32 stays float32; other real numbers become float64.
    """
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of shape {dims}: {e}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                                 or np.issubdtype(a.dtype, np.integer)
                                 or a.dtype == bool):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if a.ndim != len(shape):
        raise ValueError(f"{name} must have {len(shape)} dimensions {dims}, "
                         f"got shape {a.shape}")
    for got, want in zip(a.shape, shape):
        if want is not None and got != want:
            raise ValueError(f"{name} must have shape {dims} = "
                             f"{_fmt(shape)}, got {a.shape}")
    if 0 in a.shape:
        raise ValueError(f"{name} must not be empty, got shape {a.shape} for {dims}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def param_dict(name, params, shapes):
    """Check a dict of parameter arrays against ``shapes`` {key: (shape, dims)}.

    Returns a new dict of validated arrays; raises on missing or unknown keys.
    """
    if not isinstance(params, dict):
        raise ValueError(f"{name} must be a dict with keys {sorted(shapes)}, "
                         f"got {type(params).__name__}")
    missing = sorted(set(shapes) - set(params))
    unknown = sorted(set(params) - set(shapes), key=str)
    if missing or unknown:
        raise ValueError(f"{name} must have exactly the keys {sorted(shapes)}; "
                         f"missing {missing}, unknown {unknown}")
    return {k: array(f"{name}['{k}']", params[k], *shapes[k]) for k in shapes}


def common_dtype(*arrays):
    """float32 if every array is float32, else float64."""
    return np.result_type(*arrays)


def _fmt(shape):
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
