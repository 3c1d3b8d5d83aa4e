"""The envelope: the only code that turns messages into bytes and back.

Every message is a msgpack map ``{type, from, session, seq, body}``; bytes stay
bytes (``use_bin_type=True``) and map keys must be strings or bytes. Decoding checks
the size, the msgpack, the envelope fields and the body against the schema table in
:mod:`emulator.messages`, and raises a typed :class:`EnvelopeError` for anything
wrong. Callers reply with an error or drop the message; they never crash on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgpack

from emulator.errors import DecodeError
from emulator.messages import SCHEMA, Field

P2P_MAX_BYTES = 2 * 65_535 + 1_024  # a BOLT message is at most 65,535 bytes of payload
CONTROL_MAX_BYTES = 64 * 1024 * 1024  # control replies may carry whole blocks


class EnvelopeError(DecodeError):
    """A message that cannot be accepted; ``code`` says why."""

    code = "bad_message"


class OversizedMessage(EnvelopeError):
    code = "oversized"


class MalformedMessage(EnvelopeError):
    code = "malformed"


class UnknownMessageType(EnvelopeError):
    code = "unknown_type"


class SchemaViolation(EnvelopeError):
    code = "schema_violation"


@dataclass(frozen=True)
class Envelope:
    """One decoded message."""

    type: str
    body: dict[str, Any]
    sender: bytes | str = b""
    session: bytes = b""
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_FIXED_BYTES = {"bytes32": 32, "pubkey": 33, "sig": 64}
_UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}


def _check_value(type_name: str, f: Field, value: Any) -> None:
    kind = f.kind
    where = f"{type_name}.{f.name}"
    if kind in _FIXED_BYTES:
        if not isinstance(value, bytes) or len(value) != _FIXED_BYTES[kind]:
            raise SchemaViolation(f"{where}: expected {_FIXED_BYTES[kind]} bytes ({kind})")
    elif kind in _UINT_BITS:
        if type(value) is not int or not 0 <= value < (1 << _UINT_BITS[kind]):
            raise SchemaViolation(f"{where}: expected an unsigned {_UINT_BITS[kind]}-bit int")
    elif kind == "int":
        if type(value) is not int:
            raise SchemaViolation(f"{where}: expected an int")
    elif kind == "bytes":
        if not isinstance(value, bytes):
            raise SchemaViolation(f"{where}: expected bytes")
    elif kind == "str":
        if not isinstance(value, str):
            raise SchemaViolation(f"{where}: expected a string")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise SchemaViolation(f"{where}: expected a bool")
    elif kind == "list":
        if not isinstance(value, list):
            raise SchemaViolation(f"{where}: expected a list")
    elif kind == "map":
        if not isinstance(value, dict):
            raise SchemaViolation(f"{where}: expected a map")


def check_body(type_name: str, body: Any) -> dict[str, Any]:
    """Check ``body`` against the schema of ``type_name``; return it."""
    spec = SCHEMA.get(type_name)
    if spec is None:
        raise UnknownMessageType(f"unknown message type {type_name!r}")
    if not isinstance(body, dict):
        raise SchemaViolation(f"{type_name}: body must be a map")
    known = _field_names(type_name)
    unknown = [k for k in body if k not in known]
    if unknown:
        raise SchemaViolation(f"{type_name}: unknown field(s) {sorted(map(str, unknown))}")
    for f in spec:
        if f.name not in body:
            if f.required:
                raise SchemaViolation(f"{type_name}: missing field {f.name!r}")
            continue
        _check_value(type_name, f, body[f.name])
    return body


@cache
def _field_names(type_name: str) -> frozenset[str]:
    return frozenset(f.name for f in SCHEMA[type_name])


def pack(type_name: str, body: dict[str, Any], *, sender: bytes | str = b"",
         session: bytes = b"", seq: int = 0) -> bytes:
    """Serialize one message; the body is checked against the schema first."""
    check_body(type_name, body)
    env = {"type": type_name, "from": sender, "session": session, "seq": seq, "body": body}
    return msgpack.packb(env, use_bin_type=True)


def _unpack_raw(data: bytes, max_bytes: int) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage("message is not bytes")
    if len(data) > max_bytes:
        raise OversizedMessage(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"not a valid msgpack message: {exc.__class__.__name__}") from None


def unpack(data: bytes, *, max_bytes: int = P2P_MAX_BYTES) -> Envelope:
    """Parse and check one message; raise an :class:`EnvelopeError` subclass if bad."""
    env = _unpack_raw(data, max_bytes)
    if not isinstance(env, dict):
        raise MalformedMessage("envelope must be a map")
    type_name = env.get("type")
    if not isinstance(type_name, str):
        raise MalformedMessage("envelope has no string 'type'")
    sender, session, seq = env.get("from", b""), env.get("session", b""), env.get("seq", 0)
    if not isinstance(sender, (bytes, str)):
        raise MalformedMessage("envelope 'from' must be bytes or a string")
    if not isinstance(session, bytes) or len(session) > 32:
        raise MalformedMessage("envelope 'session' must be at most 32 bytes")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise MalformedMessage("envelope 'seq' must be a non-negative int")
    unknown = set(env) - {"type", "from", "session", "seq", "body"}
    if unknown:
        raise MalformedMessage(f"envelope has unknown key(s) {sorted(map(str, unknown))}")
    body = check_body(type_name, env.get("body"))
    return Envelope(type_name, body, sender, session, seq)


# --- control RPC and events: the same envelope, other message types -------------

def pack_request(op: str, args: dict[str, Any], rid: int) -> bytes:
    """A control-RPC request ``{op, args, rid}``."""
    return pack("request", {"op": op, "args": args, "rid": rid})


def pack_reply(rid: int, result: Any = None, error: dict[str, str] | None = None) -> bytes:
    """A control-RPC reply: ``result`` on success, ``error{code, message}`` on failure."""
    body: dict[str, Any] = {"rid": rid, "ok": error is None}
    if error is None:
        body["result"] = result
    else:
        body["error"] = error
    return pack("reply", body)


def unpack_control(data: bytes, expected: str) -> dict[str, Any]:
    """Unpack a control message of type ``expected`` and return its body."""
    env = unpack(data, max_bytes=CONTROL_MAX_BYTES)
    if env.type != expected:
        raise UnknownMessageType(f"expected a {expected!r} message, got {env.type!r}")
    return env.body


def pack_event(ts: float, proc: str, kind: str, data: dict[str, Any]) -> bytes:
    """One event for the runner's collector (the event schema, checked inline: a peer
    emits thousands a second)."""
    if not (isinstance(proc, str) and isinstance(kind, str) and isinstance(data, dict)):
        raise SchemaViolation("event: proc and kind must be strings and data a map")
    env = {"type": "event", "from": b"", "session": b"", "seq": 0,
           "body": {"ts": ts, "proc": proc, "kind": kind, "data": data}}
    return msgpack.packb(env, use_bin_type=True)


def pack_block_announcement(block: dict[str, Any]) -> bytes:
    """The header part of a new block, as published on the chain's PUB socket."""
    return pack("block", block)


def to_plain(obj: Any) -> Any:
    """Make a decoded structure JSON-friendly: bytes become hex strings."""
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {str(to_plain(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
