"""The wire format between a graded notebook and the grader: JSON (never pickle), arrays
as dtype/shape/base64, in frames ``b"<length>\\n<json>"``. ``decode_value`` parses the
untrusted side strictly, with caps. Imported on both sides of the sandbox.

The runner's frames to the grader are authenticated (``signer``): each ends with
HMAC-SHA256(job key, frame number || JSON), the key a random one per job, given in the
job's spec and kept only in the signer's closure. The coordinator's FrameReader(key=...)
refuses a frame without the right code, so a notebook that writes to the grader's pipe
itself (instead of the runner) sends malformed data. Serialising and signing use only C
functions bound at import (json's C encoder, _hashlib.hmac_digest): nothing a notebook
can monkeypatch runs with the key or the frames.
"""
import base64
import hmac
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


MAC_BYTES = 32


def _c_json():
    """json's C encoder and scanner, bound now (json.dumps and json.loads look up module
    attributes at each call, which a notebook could replace)."""
    from json import decoder, encoder, scanner

    def refuse(obj):
        raise TypeError(f"{type(obj).__name__} cannot be sent")
    enc = encoder.c_make_encoder(None, refuse, encoder.c_encode_basestring_ascii, None,
                                 ":", ",", False, False, False)
    return enc, scanner.c_make_scanner(decoder.JSONDecoder())


_c_encode, _c_scan = _c_json()
_join = "".join
try:
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:                       # pragma: no cover (CPython without OpenSSL)
    _hmac_digest = hmac.digest


def dumps_c(message):
    """The JSON of a message (dicts, lists, exact str/int/float/bool/None), by C code only."""
    return _join(_c_encode(message, 0)).encode()


def loads_c(data):
    """A JSON object from bytes, by C code only (ValueError when it is not one)."""
    text = data.decode("utf-8")
    obj, end = _c_scan(text, 0)
    if text[end:].strip() or type(obj) is not dict:
        raise ValueError("not one JSON object")
    return obj


def mac(key, seq, payload):
    """The authentication code of frame number seq."""
    return _hmac_digest(key, seq.to_bytes(8, "big") + payload, "sha256")


def signer(key, encode=_c_encode, join=_join, digest=_hmac_digest, to_bytes=int.to_bytes,
           str_encode=str.encode, length=len, size=MAC_BYTES):
    """frame(message) for the runner: numbered and authenticated with key, which only this
    closure holds; everything it calls is bound here (a notebook that replaces a module's
    attributes changes nothing in it)."""
    count = [0]

    def sign(message):
        payload = str_encode(join(encode(message, 0)))
        n = count[0]
        count[0] = n + 1
        return b"%d\n" % (length(payload) + size) + payload + digest(key, to_bytes(n, 8, "big") + payload,
                                                                    "sha256")
    return sign


class WireError(ValueError):
    """Bytes from a child that do not follow the protocol."""


def frame(message):
    data = _dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return b"%d\n" % len(data) + data


class FrameReader:
    """Splits a byte stream into frames; raises WireError on anything malformed."""

    def __init__(self, max_total, key=None):
        self.buffer = bytearray()
        self.total = 0
        self.max_total = max_total
        self.key, self.seq = key, 0

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
            if self.key is not None:
                payload, code = payload[:-MAC_BYTES], payload[-MAC_BYTES:]
                if length < MAC_BYTES or not hmac.compare_digest(mac(self.key, self.seq, payload), code):
                    raise WireError("a frame the grader's runner did not send (bad authentication code)")
                self.seq += 1
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
