"""The wire format between a graded notebook and the grader: JSON (never pickle), arrays
as dtype/shape/base64, in frames ``b"<length>\\n<json>"``. ``decode_value`` parses the
untrusted side strictly, with caps. Imported on both sides of the sandbox."""
import base64
import json
import sys

import numpy as np

from rnnbook.grading.defaults import MAX_DEPTH, MAX_FRAME, MAX_ITEMS, MAX_TEXT, MAX_VALUE_BYTES

# Bound once, so that a notebook that monkeypatches them changes nothing here.
_dumps, _b64encode = json.dumps, base64.b64encode
_asarray, _repr, _dict_items = np.asarray, float.__repr__, dict.items
_ndarray = np.ndarray
_SCALARS = frozenset(t for t in np.sctypeDict.values() if issubclass(t, np.generic)
                     and t.__module__ == "numpy")         # numpy's own scalar types only

__all__ = ["MAX_TEXT", "WireError", "frame", "FrameReader", "encode_value", "decode_value",
           "Other", "describe_value"]

DTYPES = {s: s for s in ("<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1",
                         "<u8", "<u4", "<u2", "|u1", "|b1")}


class WireError(ValueError):
    """Bytes from a child that do not follow the protocol."""


def frame(message):
    data = _dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return b"%d\n" % len(data) + data


class FrameReader:
    """Splits a byte stream into frames; raises WireError on anything malformed."""

    def __init__(self, max_total):
        self.buffer = bytearray()
        self.total = 0
        self.max_total = max_total

    def feed(self, data):
        """The complete messages in the stream so far; raises WireError (with the messages
        that came before the bad bytes in ``.messages``) on anything malformed."""
        messages = []
        try:
            self._feed(data, messages)
        except WireError as e:
            e.messages = messages
            raise
        return messages

    def _feed(self, data, messages):
        self.total += len(data)
        if self.total > self.max_total:
            raise WireError(f"sent more than {self.max_total >> 20} MB to the grader")
        self.buffer += data
        while True:
            newline = self.buffer.find(b"\n", 0, 12)
            if newline < 0:
                if len(self.buffer) >= 12:
                    raise WireError("malformed frame header")
                return messages
            header = bytes(self.buffer[:newline])
            if not header.isdigit():
                raise WireError("malformed frame header")
            length = int(header)
            if length > MAX_FRAME:
                raise WireError("frame too large")
            if len(self.buffer) < newline + 1 + length:
                return messages
            payload = bytes(self.buffer[newline + 1:newline + 1 + length])
            del self.buffer[:newline + 1 + length]
            try:
                message = json.loads(payload)
            except (ValueError, RecursionError) as e:
                raise WireError(f"not JSON: {str(e)[:100]}") from None
            if not isinstance(message, dict):
                raise WireError("a message is not a JSON object")
            messages.append(message)


def encode_value(obj, budget=None, depth=0):
    """A return value as JSON: only values of these exact types are read (never a subclass,
    whose methods a notebook could override): None, bool, int, float, str, numpy arrays and
    numpy's own scalars, torch.Tensor, tuple, list, dict (str keys). Anything else is sent as
    ``Other`` (its type's name)."""
    if budget is None:
        budget = [MAX_VALUE_BYTES]
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    t = type(obj)
    if obj is None:
        return {"t": "none"}
    if t is bool:
        return {"t": "bool", "v": obj}
    if t is str:
        return {"t": "str", "v": obj[:200]}
    if t is int:
        if not -2**63 <= obj < 2**63:
            raise ValueError("an integer too large to send")
        return {"t": "int", "v": obj}
    if t is float:
        return {"t": "float", "v": _repr(obj)}
    torch = sys.modules.get("torch")
    if torch is not None and t is torch.Tensor:
        obj = obj.detach().cpu().resolve_conj().resolve_neg().numpy()
        t = type(obj)
    if t is _ndarray or t in _SCALARS:
        a = _asarray(obj)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"arrays of dtype {a.dtype} are not accepted")
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        if dt.str not in DTYPES:
            raise ValueError(f"arrays of dtype {a.dtype} are not accepted")
        if a.nbytes > budget[0]:
            raise ValueError(f"the value is larger than {MAX_VALUE_BYTES >> 20} MB")
        budget[0] -= a.nbytes
        return {"t": "array", "dtype": dt.str, "shape": list(a.shape),
                "data": _b64encode(a.tobytes(order="C")).decode()}
    if t is tuple or t is list:
        if len(obj) > MAX_ITEMS:
            raise ValueError(f"a {t.__name__} of {len(obj)} items is too long")
        return {"t": "list", "kind": "tuple" if t is tuple else "list",
                "items": [encode_value(x, budget, depth + 1) for x in obj]}
    if t is dict:
        if len(obj) > MAX_ITEMS:
            raise ValueError(f"a dict of {len(obj)} items is too long")
        items = []
        for k, v in _dict_items(obj):
            if type(k) is not str:
                raise ValueError(f"dict keys must be strings, got {type(k).__name__}")
            items.append([k[:100], encode_value(v, budget, depth + 1)])
        return {"t": "dict", "items": items}
    return {"t": "other", "type": str(type.__getattribute__(t, "__name__"))[:100]}


def decode_value(node, budget=None, depth=0):
    """Inverse of encode_value for UNTRUSTED input: strict checks, caps, no code runs.

    Returns None, bool, str, int, float, numpy arrays, tuples/lists, dicts, or
    ``Other(type_name)``. Raises WireError on anything else."""
    if budget is None:
        budget = [MAX_VALUE_BYTES]
    if depth > MAX_DEPTH or not isinstance(node, dict):
        raise WireError("malformed value")
    t = node.get("t")
    if t == "none":
        return None
    if t == "bool" and isinstance(node.get("v"), bool):
        return node["v"]
    if t == "str" and isinstance(node.get("v"), str):
        return node["v"][:200]
    if t == "int" and type(node.get("v")) is int and -2**63 <= node["v"] < 2**63:
        return node["v"]
    if t == "float" and isinstance(node.get("v"), str) and len(node["v"]) <= 32:
        try:
            return float(node["v"])
        except ValueError:
            raise WireError("malformed float") from None
    if t == "other" and isinstance(node.get("type"), str):
        return Other(node["type"][:100])
    if t == "array":
        dtype, shape, data = node.get("dtype"), node.get("shape"), node.get("data")
        if dtype not in DTYPES or not isinstance(shape, list) or not isinstance(data, str):
            raise WireError("malformed array")
        if len(shape) > 16 or not all(type(n) is int and 0 <= n <= MAX_VALUE_BYTES for n in shape):
            raise WireError("malformed array shape")
        dt = np.dtype(DTYPES[dtype])
        count = 1
        for n in shape:
            count *= n
        if count * dt.itemsize > budget[0] or len(data) > 4 * (budget[0] // 3 + 4):
            raise WireError("array too large")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise WireError("malformed array data") from None
        if len(raw) != count * dt.itemsize:
            raise WireError("array data does not match its shape")
        budget[0] -= len(raw)
        return np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    if t == "list" and isinstance(node.get("items"), list) and len(node["items"]) <= MAX_ITEMS:
        items = [decode_value(x, budget, depth + 1) for x in node["items"]]
        return tuple(items) if node.get("kind") == "tuple" else items
    if t == "dict" and isinstance(node.get("items"), list) and len(node["items"]) <= MAX_ITEMS:
        out = {}
        for pair in node["items"]:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise WireError("malformed dict")
            out[pair[0][:100]] = decode_value(pair[1], budget, depth + 1)
        return out
    raise WireError("malformed value")


class Other:
    """A return value of a type the wire does not carry (only its type's name)."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name}>"


def describe_value(v):
    """Short human description of a decoded value, for feedback."""
    if isinstance(v, _ndarray):
        return f"array {v.dtype} of shape {v.shape}" if v.ndim else f"{v.dtype} scalar"
    if isinstance(v, tuple):
        return f"tuple of {len(v)}"
    if isinstance(v, list):
        return f"list of {len(v)}"
    if isinstance(v, dict):
        return "dict with keys " + ", ".join(map(repr, list(v)[:10]))
    if v is None:
        return "None"
    if isinstance(v, Other):
        return f"a {v.type_name} object"
    return type(v).__name__
