"""L1 transactions: the model, its wire form, txid, sighash and signing.

A transaction is ``{version, inputs[{txid, vout, sequence}], outputs[{amount_sat, cond}],
locktime, witnesses[...]}``. Its ``txid`` is the double SHA-256 of the canonical msgpack
array ``[version, [[txid, vout, sequence]...], [[amount_sat, cond]...], locktime]``, so
witnesses never change it. Signatures are 64-byte compact ECDSA (see ``emulator.policy``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from emulator.errors import DecodeError, LnemuError
from emulator.policy import (
    LOCKTIME_THRESHOLD,
    SEQUENCE_FINAL,
    PolicyFormatError,
    SpendContext,
    SpendResult,
    Witness,
    check_policy,
    evaluate,
    packed_policy,
    sign,
    verify,
)

__all__ = [
    "DEFAULT_SEQUENCE", "MAX_MONEY_SAT", "MAX_TX_BYTES", "MAX_TX_INPUTS", "MAX_TX_OUTPUTS", "SIGHASH_TAG",
    "OutPoint", "Tx", "TxError", "TxFormatError", "TxIn", "TxOut",
    "blocks_until_final", "is_final", "sighash", "sign", "verify",
]

MAX_MONEY_SAT = 21_000_000 * 100_000_000
# BOLT 2 allows 483 HTLCs each way, so a commitment can carry 966 HTLC outputs plus
# to_local, to_remote and anchors; a justice tx may sweep them all.
MAX_TX_INPUTS = 2000
MAX_TX_OUTPUTS = 2000
MAX_TX_BYTES = 1_000_000
MAX_U32 = 0xFFFF_FFFF
TXID_LEN = 32
SIGHASH_TAG = b"lnemu/sighash/v1"
DEFAULT_SEQUENCE = 0xFFFF_FFFE  # enables locktime, disables BIP 68 relative locks

_TX_KEYS = {"version", "inputs", "outputs", "locktime", "witnesses"}


class TxFormatError(DecodeError):
    """A transaction that does not parse: the message names the bad field."""

    code = "bad_tx"


class TxError(LnemuError):
    """A transaction used wrongly in this process (e.g. an input index out of range)."""

    code = "tx_error"


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


_array = msgpack.Packer(use_bin_type=True).pack_array_header  # msgpack is compositional:
# an array's bytes are its header and its items' bytes, so a policy packed once is reused


@dataclass(frozen=True)
class OutPoint:
    """A reference to one output of one transaction."""

    txid: bytes
    vout: int

    def __str__(self) -> str:
        return f"{self.txid.hex()}:{self.vout}"


@dataclass(frozen=True)
class TxIn:
    """An input: the outpoint it spends and its sequence number."""

    txid: bytes
    vout: int
    sequence: int = DEFAULT_SEQUENCE

    @property
    def outpoint(self) -> OutPoint:
        """The outpoint this input spends."""
        return OutPoint(self.txid, self.vout)


@dataclass(frozen=True)
class TxOut:
    """An output: an amount and the policy that spends it."""

    amount_sat: int
    cond: list


@dataclass
class Tx:
    """An L1 transaction; ``witnesses`` is empty until signed, else one per input."""

    inputs: list[TxIn]
    outputs: list[TxOut]
    locktime: int = 0
    version: int = 2
    witnesses: list[Witness] = field(default_factory=list)

    @property
    def txid(self) -> bytes:
        """Double SHA-256 of the canonical msgpack of the tx without witnesses."""
        pair = _array(2)
        return _sha256d(b"".join((
            _array(4), _pack(self.version),
            _pack([[txin.txid, txin.vout, txin.sequence] for txin in self.inputs]),
            _array(len(self.outputs)),
            *(pair + _pack(txout.amount_sat) + packed_policy(txout.cond)
              for txout in self.outputs),
            _pack(self.locktime))))

    @property
    def txid_hex(self) -> str:
        """The txid as hex (byte order as computed, not reversed as Bitcoin displays)."""
        return self.txid.hex()

    @property
    def size(self) -> int:
        """Serialized size in bytes, witnesses included (for fee rates and block limits)."""
        return len(self.serialize())

    def to_wire(self) -> dict:
        """The transaction as a plain msgpack-able map."""
        return {
            "version": self.version,
            "inputs": [
                {"txid": txin.txid, "vout": txin.vout, "sequence": txin.sequence}
                for txin in self.inputs
            ],
            "outputs": [{"amount_sat": txout.amount_sat, "cond": txout.cond} for txout in self.outputs],
            "locktime": self.locktime,
            "witnesses": [witness.to_wire() for witness in self.witnesses],
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Tx:
        """Parse and check a transaction map; raise TxFormatError naming the bad field."""
        _expect_map(obj, "tx", _TX_KEYS, optional={"witnesses"})
        version = _expect_int(obj["version"], "version", 0, MAX_U32)
        locktime = _expect_int(obj["locktime"], "locktime", 0, MAX_U32)
        inputs = _parse_inputs(obj["inputs"])
        outputs = _parse_outputs(obj["outputs"])
        witnesses = _parse_witnesses(obj.get("witnesses", []), len(inputs))
        return cls(inputs, outputs, locktime, version, witnesses)

    def serialize(self) -> bytes:
        """The wire form as msgpack bytes."""
        return _pack(self.to_wire())

    @classmethod
    def deserialize(cls, data: bytes) -> Tx:
        """Parse msgpack bytes; raise TxFormatError on anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TxFormatError(f"tx: expected bytes, got {type(data).__name__}")
        if len(data) > MAX_TX_BYTES:
            raise TxFormatError(f"tx: {len(data)} bytes exceeds {MAX_TX_BYTES}")
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises many kinds for malformed input
            raise TxFormatError(f"tx: malformed msgpack ({type(exc).__name__}: {exc})") from exc
        return cls.from_wire(obj)

    def sign_input(self, index: int, privkey: bytes, amount_sat: int, cond: list) -> bytes:
        """Sign input ``index``, which spends ``amount_sat`` locked by ``cond``."""
        return sign(privkey, sighash(self, index, amount_sat, cond))

    def spend_context(
        self, index: int, amount_sat: int, cond: list, spend_height: int, confirmed_height: int
    ) -> SpendContext:
        """The context in which input ``index`` is checked against its spent policy."""
        return SpendContext(
            sighash=sighash(self, index, amount_sat, cond),
            locktime=self.locktime,
            sequence=self.inputs[index].sequence,
            spend_height=spend_height,
            confirmed_height=confirmed_height,
        )

    def evaluate_input(
        self, index: int, amount_sat: int, cond: list, spend_height: int, confirmed_height: int
    ) -> SpendResult:
        """Check input ``index``'s witness (empty if unsigned); raise PolicyNotSatisfied."""
        if self.witnesses and len(self.witnesses) != len(self.inputs):
            raise TxError(f"tx has {len(self.witnesses)} witnesses for {len(self.inputs)} inputs")
        witness = self.witnesses[index] if self.witnesses else Witness()
        ctx = self.spend_context(index, amount_sat, cond, spend_height, confirmed_height)
        return evaluate(cond, witness, ctx)


def sighash(tx: Tx, input_index: int, amount_sat: int, cond: list) -> bytes:
    """The 32-byte digest input ``input_index`` signs: tag, txid, index, spent amount, policy."""
    if not 0 <= input_index < len(tx.inputs):
        raise TxError(f"input index {input_index} out of range (tx has {len(tx.inputs)} inputs)")
    # As BIP 143, commit to the spent amount (and here the spent policy) so that a signer
    # who only sees the tx cannot be tricked about what it spends.
    head = _pack([SIGHASH_TAG, tx.txid, input_index, amount_sat])  # 1-byte array header
    return _sha256d(_array(5) + head[1:] + packed_policy(cond))


def is_final(tx: Tx, height: int) -> bool:
    """True if ``tx`` may go into a block at ``height`` (BIP 65: its locktime has passed).

    Locktime 0 is always final; a height locktime L needs ``height >= L``. As in Bitcoin a
    tx whose inputs all have sequence 0xFFFFFFFF ignores its locktime. A locktime of
    500,000,000 or more is a UNIX time; lnemu's chain keeps no clock and counts them as past
    (BOLT 3 commitments carry 0x20xxxxxx there, a time in 1987).
    """
    if tx.locktime == 0 or tx.locktime >= LOCKTIME_THRESHOLD:
        return True
    if all(txin.sequence == SEQUENCE_FINAL for txin in tx.inputs):
        return True
    return tx.locktime <= height


def blocks_until_final(tx: Tx, height: int) -> int:
    """How many blocks after ``height`` until ``tx`` is final (0 if it is final now)."""
    return 0 if is_final(tx, height) else tx.locktime - height


# --- wire parsing ---------------------------------------------------------------------


def _expect_int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TxFormatError(f"{name}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise TxFormatError(f"{name}: {value} out of range [{low}, {high}]")
    return value


def _expect_bytes(value: Any, name: str, length: int) -> bytes:
    if not isinstance(value, bytes):
        raise TxFormatError(f"{name}: expected bytes, got {type(value).__name__}")
    if len(value) != length:
        raise TxFormatError(f"{name}: expected {length} bytes, got {len(value)}")
    return value


def _expect_list(value: Any, name: str, max_len: int) -> list:
    if not isinstance(value, list):
        raise TxFormatError(f"{name}: expected a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise TxFormatError(f"{name}: {len(value)} items exceeds the limit of {max_len}")
    return value


def _expect_map(value: Any, name: str, keys: set[str], optional: frozenset | set = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise TxFormatError(f"{name}: expected a map, got {type(value).__name__}")
    missing = keys - set(optional) - set(value)
    unknown = set(value) - keys
    if missing or unknown:
        detail = f"missing {sorted(missing)}" if missing else f"unknown {sorted(map(str, unknown))}"
        raise TxFormatError(f"{name}: {detail} field(s)")
    return value


def _parse_inputs(value: Any) -> list[TxIn]:
    # Zero inputs is well formed here (genesis and miner outputs); the chain decides.
    inputs = []
    seen: set[tuple[bytes, int]] = set()
    for i, item in enumerate(_expect_list(value, "inputs", MAX_TX_INPUTS)):
        name = f"inputs[{i}]"
        _expect_map(item, name, {"txid", "vout", "sequence"})
        txid = _expect_bytes(item["txid"], f"{name}.txid", TXID_LEN)
        vout = _expect_int(item["vout"], f"{name}.vout", 0, MAX_TX_OUTPUTS - 1)
        sequence = _expect_int(item["sequence"], f"{name}.sequence", 0, MAX_U32)
        if (txid, vout) in seen:
            raise TxFormatError(f"{name}: spends {txid.hex()}:{vout} twice")
        seen.add((txid, vout))
        inputs.append(TxIn(txid, vout, sequence))
    return inputs


def _parse_outputs(value: Any) -> list[TxOut]:
    outputs = []
    total_sat = 0
    for i, item in enumerate(_expect_list(value, "outputs", MAX_TX_OUTPUTS)):
        name = f"outputs[{i}]"
        _expect_map(item, name, {"amount_sat", "cond"})
        amount_sat = _expect_int(item["amount_sat"], f"{name}.amount_sat", 0, MAX_MONEY_SAT)
        try:
            check_policy(item["cond"])
        except PolicyFormatError as exc:
            raise TxFormatError(f"{name}.cond: {exc}") from exc
        total_sat += amount_sat
        if total_sat > MAX_MONEY_SAT:
            raise TxFormatError(f"outputs: total {total_sat} sat exceeds {MAX_MONEY_SAT}")
        outputs.append(TxOut(amount_sat, item["cond"]))
    return outputs


def _parse_witnesses(value: Any, input_count: int) -> list[Witness]:
    items = _expect_list(value, "witnesses", MAX_TX_INPUTS)
    if items and len(items) != input_count:
        raise TxFormatError(f"witnesses: {len(items)} witnesses for {input_count} inputs")
    witnesses = []
    for i, item in enumerate(items):
        try:
            witnesses.append(Witness.from_wire(item))
        except PolicyFormatError as exc:
            raise TxFormatError(f"witnesses[{i}]: {exc}") from exc
    return witnesses
