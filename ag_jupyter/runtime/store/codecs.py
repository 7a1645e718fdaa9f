"""How values become text in the workspace database, and back: JSON codecs, free text,
identifiers and timestamps. A leaf module: it imports nothing of ag_jupyter.

Three kinds of values, three rules:

- **JSON data** a caller asked to store (kv values, memory data, artifact metadata):
  :func:`dumps_json` stores it exactly or raises a precise error (a type JSON cannot hold,
  NaN, a cycle, nesting too deep). JSON text is ASCII (``\\uXXXX`` escapes), so odd
  Unicode such as lone surrogates round-trips losslessly.
- **Records the runtime keeps** (a run's meta, outputs, inputs): never rejected.
  :func:`dumps_lenient` and :func:`encode_outputs` store what JSON cannot hold as a
  preview ``{"__repr__": ..., "__type__": ...}`` and say whether the result is exact.
- **Free text in plain columns** (a run's error, log lines): :func:`db_text` passes valid
  Unicode through and stores text that UTF-8 cannot encode (lone surrogates, e.g.
  ``os.fsdecode(b"caf\\xe9")``) as a BLOB of its ``surrogatepass`` bytes;
  :func:`text_from_db` reads both back as the same ``str``.

Identifiers (run ids, graph ids, session/agent/app ids, tags) must be plain text:
:func:`check_identifier` rejects NUL and lone surrogates with a ``ValueError`` naming the
field, since SQL comparisons and JSON lookups would never find such a value again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

#: Records the runtime keeps are previewed below this depth (lists/dicts within lists/dicts).
MAX_DEPTH = 200
#: A str output longer than this (characters) is encoded off the event loop.
LIGHT_STR_MAX = 16_384


class _NotJSON(Exception):
    def __init__(self, obj: Any) -> None:
        super().__init__(type(obj).__name__)
        self.obj = obj


def _reject(obj: Any) -> Any:
    raise _NotJSON(obj)


# Built once: json.dumps() with non-default options builds a new encoder on every call.
_strict_encode = json.JSONEncoder(allow_nan=False, default=_reject).encode
_plain_encode = json.JSONEncoder(allow_nan=False).encode


def dumps_json(value: Any, what: str = "values") -> str:
    """Serialise ``value`` as JSON text (tuples become arrays), exactly or not at all.

    Args:
      value: a JSON-compatible value (dict with str keys, list, tuple, str, int, float,
        bool, None, nested less deeply than the interpreter's recursion limit).
      what: how the caller names the value in errors (e.g. ``"kv values"``).

    Raises:
      TypeError: naming the offending type, e.g. ``kv values must be JSON-serialisable;
        got set``; also for NaN/infinity and for dict keys JSON cannot hold.
      ValueError: if the value contains itself (a cycle), or nests deeper than JSON
        encoding can follow (about ``sys.getrecursionlimit()`` levels).
    """
    try:
        return _strict_encode(value)
    except _NotJSON as exc:
        raise TypeError(
            f"{what} must be JSON-serialisable; got {type(exc.obj).__name__} "
            "(store a dict/list/str/number/bool/None, or convert it first, e.g. list(...) "
            "or str(...))"
        ) from None
    except RecursionError:
        raise ValueError(
            f"{what} nest too deeply to store (JSON encoding stops at about "
            f"{sys.getrecursionlimit()} levels of lists/dicts); flatten the value or store "
            "it as an artifact"
        ) from None
    except ValueError as exc:
        if "ircular" in str(exc):
            raise ValueError(
                f"{what} must not contain themselves: this value has a circular reference "
                "(a list or dict that holds itself); store a copy without the cycle"
            ) from None
        raise TypeError(
            f"{what} must be JSON-serialisable; got a float NaN or infinity, which JSON "
            "cannot represent (store None or a string instead)"
        ) from None
    except TypeError as exc:  # a dict key of a type JSON cannot hold
        raise TypeError(f"{what} must be JSON-serialisable; {exc}") from None


def preview(value: Any, max_chars: int = 1000) -> dict[str, str]:
    """A JSON stand-in for a value JSON cannot hold: ``{"__repr__": ..., "__type__": ...}``.

    The repr is cut to ``max_chars`` characters. Never raises (a broken ``__repr__`` is
    named instead).
    """
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<unrepresentable: {type(exc).__name__}>"
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    kind = type(value)
    return {"__repr__": text, "__type__": f"{kind.__module__}.{kind.__qualname__}"}


def _sanitise(value: Any, depth: int, active: set[int]) -> Any:
    """A JSON-able copy of ``value``: NaN as text, cycles and too-deep parts as previews,
    other objects as previews. Depth is bounded by ``MAX_DEPTH``."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH or id(value) in active:
            return preview(value, 200)
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {str(k): _sanitise(v, depth + 1, active) for k, v in value.items()}
            return [_sanitise(v, depth + 1, active) for v in value]
        finally:
            active.discard(id(value))
    return preview(value)


def sanitise(value: Any) -> Any:
    """What :func:`dumps_lenient` stores, as Python data (see there)."""
    try:
        return _sanitise(value, 0, set())
    except RecursionError:  # called from deep in a stack already
        return preview(value, 200)


def dumps_lenient(value: Any) -> str:
    """JSON text for ``value``; parts JSON cannot hold become previews (never raises)."""
    if not value:
        return "{}" if isinstance(value, dict) else _plain_encode(value)
    try:
        return _strict_encode(value)
    except (_NotJSON, TypeError, ValueError, RecursionError):
        return _plain_encode(sanitise(value))


_SCALARS = frozenset({str, int, bool, type(None)})


def is_light(values: Mapping[str, Any] | None) -> bool:
    """Whether ``values`` (outputs or inputs) is cheap to encode on the event loop: every
    key a str and every value None, a bool, an int, a float or a str of at most
    ``LIGHT_STR_MAX`` characters. Anything else is encoded in the writer thread."""
    if not values:
        return True
    for key, value in values.items():
        kind = type(value)
        if type(key) is not str:
            return False
        if kind is str:
            if len(value) > LIGHT_STR_MAX:
                return False
        elif kind not in _SCALARS and kind is not float:
            return False
    return True


def encode_light(values: Mapping[str, Any]) -> str | None:
    """The JSON text of ``values`` when it is light (see :func:`is_light`) and JSON can
    hold it exactly (light values always round-trip, NaN aside), else None: the caller
    then encodes it in the writer thread with :func:`encode_outputs_chunked`."""
    if not is_light(values):
        return None
    try:
        return _strict_encode(values)
    except (_NotJSON, TypeError, ValueError):
        return None  # NaN or infinity: previewed off the loop


def encode_outputs(outputs: Mapping[str, Any]) -> tuple[str, bool]:
    """JSON text to store for a run's ``outputs`` (or inputs), and whether it round-trips
    exactly.

    Values JSON cannot hold (objects, NaN, cycles, too deep) become previews
    ``{"__repr__": ..., "__type__": ...}``; values that convert with a change (tuples,
    non-str dict keys) are stored converted and reported as not exact. Never raises.
    Cost: one encode for plain scalars, an encode and a decode otherwise (run it off the
    event loop for large values).
    """
    try:
        text = _strict_encode(outputs)
        if all(type(v) in _SCALARS for v in outputs.values()) and all(
            type(k) is str for k in outputs
        ):
            return text, True  # plain scalars (and str keys) always round-trip
        return text, json.loads(text) == outputs
    except (_NotJSON, TypeError, ValueError, RecursionError):
        pass
    stored: dict[str, Any] = {}
    for key, value in outputs.items():
        try:
            stored[str(key)] = json.loads(_strict_encode(value))
        except (_NotJSON, TypeError, ValueError, RecursionError):
            stored[str(key)] = preview(value)
    return _plain_encode(stored), False


# ------------------------------------------------- large values, off the event loop
#: Seconds of encoding/decoding after which a worker thread gives the GIL away. Measured
#: beside a 100 MB encode (bench/store_load.py): every 0.5 ms gave loop-gap p99s of
#: 1.3-2.1 ms, every 0.2 ms 0.8-1.1 ms, for 15-25% more encoding time (off the loop).
YIELD_EVERY_S = 0.0002
_STR_SLICE = 1 << 18  # characters of one huge string encoded per step
_LEAF_MAX = 256  # a container of at most this many plain scalars is encoded in one step
_LEAF_TYPES = frozenset({int, bool, type(None)})


class _Yielder:
    """Gives the GIL away (``time.sleep(0)``) once ``YIELD_EVERY_S`` passed: C-level JSON
    work on a huge value would otherwise hold it, and stall the event loop, for the whole
    value even from another thread."""

    __slots__ = ("_clock", "_deadline")

    def __init__(self) -> None:
        self._clock = time.perf_counter
        self._deadline = self._clock() + YIELD_EVERY_S

    def __call__(self) -> None:
        if self._clock() >= self._deadline:
            time.sleep(0)
            self._deadline = self._clock() + YIELD_EVERY_S


def _is_leaf(value: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> bool:
    if len(value) > _LEAF_MAX:
        return False
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict) and any(type(k) is not str for k in value):
        return False
    for item in items:
        kind = type(item)
        if kind is str:
            if len(item) > LIGHT_STR_MAX:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind not in _LEAF_TYPES:
            return False
    return True


_KEY_TEXT = {True: "true", False: "false", None: "null"}


class _ChunkedEncoder:
    """JSON text of a value in pieces, giving the GIL away between steps (see
    :func:`encode_outputs_chunked`)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.exact = True
        self.tick = _Yielder()

    def value(self, value: Any, depth: int) -> None:
        out = self.pieces
        kind = type(value)
        if kind is str:
            if len(value) <= _STR_SLICE:
                out.append(_plain_encode(value))
            else:
                out.append('"')
                for start in range(0, len(value), _STR_SLICE):
                    out.append(_plain_encode(value[start : start + _STR_SLICE])[1:-1])
                    self.tick()
                out.append('"')
        elif kind in _LEAF_TYPES:
            out.append(_plain_encode(value))
        elif kind is float:
            if math.isfinite(value):
                out.append(repr(value))
            else:
                self.preview(value)
        elif kind is list or kind is tuple or kind is dict:
            if depth >= MAX_DEPTH:
                self.preview(value)
            elif _is_leaf(value):
                out.append(_plain_encode(value))
                if kind is tuple:
                    self.exact = False
            elif kind is dict:
                self.mapping(value, depth)
            else:
                if kind is tuple:
                    self.exact = False
                self.sequence(value, depth)
        else:  # subclasses and other types: the C encoder, checked by a round trip
            try:
                text = _strict_encode(value)
            except (_NotJSON, TypeError, ValueError, RecursionError):
                self.preview(value)
                return
            try:
                if json.loads(text) != value:
                    self.exact = False
            except Exception:
                self.exact = False
            out.append(text)
        self.tick()

    def sequence(self, value: list[Any] | tuple[Any, ...], depth: int) -> None:
        out = self.pieces
        out.append("[")
        first = True
        for start in range(0, len(value), _LEAF_MAX):
            block = value[start : start + _LEAF_MAX]
            # A block of plain scalars and small plain containers: one C call.
            if all(
                type(item) in _LEAF_TYPES
                or (type(item) is str and len(item) <= LIGHT_STR_MAX)
                or (type(item) is float and math.isfinite(item))
                or (type(item) in (list, dict) and _is_leaf(item))
                for item in block
            ):
                if not first:
                    out.append(",")
                out.append(_plain_encode(list(block))[1:-1])
                first = False
            else:
                for item in block:
                    if not first:
                        out.append(",")
                    self.value(item, depth + 1)
                    first = False
            self.tick()
        out.append("]")

    def mapping(self, value: dict[Any, Any], depth: int) -> None:
        out = self.pieces
        keys: list[str] = []
        for key in value:
            if type(key) is str:
                keys.append(key)
            elif isinstance(key, bool) or key is None:
                keys.append(_KEY_TEXT[key])
                self.exact = False
            elif isinstance(key, int | float):
                keys.append(_plain_encode(key) if isinstance(key, int) else repr(key))
                self.exact = False
            else:  # JSON cannot have this key
                self.preview(value)
                return
        out.append("{")
        for index, (key, item) in enumerate(zip(keys, value.values(), strict=True)):
            if index:
                out.append(",")
            out.append(_plain_encode(key))
            out.append(":")
            self.value(item, depth + 1)
        out.append("}")

    def preview(self, value: Any) -> None:
        self.exact = False
        self.pieces.append(_plain_encode(preview(value)))


def encode_outputs_chunked(outputs: Mapping[str, Any]) -> tuple[list[str], bool]:
    """What :func:`encode_outputs` gives (as a list of text pieces), for values of any size:
    encoded in small steps that give the GIL away every ``YIELD_EVERY_S`` seconds, so the
    event loop thread never waits long for it. Call it from a worker thread. Exactness is
    worked out while encoding (tuples, non-str keys and previews make it inexact), without
    decoding the text again. Never raises for odd values."""
    encoder = _ChunkedEncoder()
    encoder.mapping(dict(outputs), 0)
    return encoder.pieces, encoder.exact


def loads_yielding(text: str | bytes) -> Any:
    """``json.loads(text)`` that gives the GIL away every ``YIELD_EVERY_S`` seconds (through
    the decoder's hooks), for large texts read in a worker thread."""
    if len(text) <= 1 << 20:
        return json.loads(text)
    tick = _Yielder()

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        tick()
        return dict(items)

    def integer(digits: str) -> int:
        tick()
        return int(digits)

    def real(digits: str) -> float:
        tick()
        return float(digits)

    return json.loads(text, object_pairs_hook=pairs, parse_int=integer, parse_float=real)


# ------------------------------------------------------------------ free text, ids
def db_text(text: str | None) -> str | bytes | None:
    """``text`` as SQLite can hold it losslessly: the ``str`` itself when UTF-8 can encode
    it, else its ``surrogatepass`` UTF-8 bytes (stored as a BLOB). Read back with
    :func:`text_from_db`."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def text_from_db(value: str | bytes | None) -> str | None:
    """The ``str`` that :func:`db_text` stored (a BLOB is decoded with ``surrogatepass``)."""
    if type(value) is bytes:
        return value.decode("utf-8", "surrogatepass")
    return value  # type: ignore[return-value]


def check_identifier(field: str, value: Any, *, allow_none: bool = True) -> str | None:
    """Return ``value`` if it is usable as an identifier, else raise.

    An identifier is a non-empty ``str`` without NUL characters or lone surrogates (SQL
    and JSON comparisons could never match such a value again).

    Raises:
      TypeError: if ``value`` is not a str (or None when ``allow_none``).
      ValueError: naming ``field`` and the value, for an empty string, a NUL or a lone
        surrogate.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{field} must be a non-empty str, got {value!r}")
    if value.isascii():
        if "\x00" in value:
            raise ValueError(f"{field} must not contain NUL characters, got {value!r}; remove them")
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{field} must be valid Unicode text, got {value!r} (it holds a lone surrogate, "
            "as os.fsdecode() makes of undecodable bytes); decode the bytes properly "
            "(e.g. bytes.decode('utf-8', 'replace')) or use another id"
        ) from None
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters, got {value!r}; remove them")
    return value


def check_tags(tags: Iterable[str] | None, *, field: str = "tags") -> list[str]:
    """``tags`` as a list of identifiers, in order.

    Raises:
      TypeError: if ``tags`` is a bare str (``tags="urgent"`` would be six one-letter tags:
        pass ``["urgent"]``) or not an iterable of str.
      ValueError: for a tag that is empty or holds NUL / a lone surrogate.
    """
    if tags is None:
        return []
    if isinstance(tags, str | bytes):
        raise TypeError(
            f"{field} must be a list of str, not a single {type(tags).__name__} ({tags!r}); "
            f"write {field}=[{tags!r}]"
        )
    try:
        items = list(tags)
    except TypeError:
        raise TypeError(
            f"{field} must be a list of str, got {type(tags).__name__} {tags!r}"
        ) from None
    return [check_identifier(f"each of {field}", tag, allow_none=False) for tag in items]  # type: ignore[misc]


# ------------------------------------------------------------------------ timestamps
def iso_utc(value: datetime) -> str:
    """ISO 8601 text of a datetime in UTC with microseconds (sorts as time does)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")
