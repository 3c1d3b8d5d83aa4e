"""BOLT 4 failure codes and the typed error that carries one back to the origin.

A failure code is a u16 whose top bits are flags (BOLT 4, "Failure Messages");
the failure message on the wire is the code followed by its code-specific data.
"""

from __future__ import annotations

from enum import IntEnum

from emulator.errors import DecodeError, LnemuError

# Flag bits of the top byte of a failure code (BOLT 4).
BADONION = 0x8000  # the onion could not be parsed by the sending peer's next hop
PERM = 0x4000  # permanent failure (otherwise transient)
NODE = 0x2000  # node failure (otherwise channel failure)
UPDATE = 0x1000  # a channel_update is enclosed


class FailureCode(IntEnum):
    """Every failure code BOLT 4 defines, built from the flag bits."""

    INVALID_REALM = PERM | 1
    TEMPORARY_NODE_FAILURE = NODE | 2
    PERMANENT_NODE_FAILURE = PERM | NODE | 2
    REQUIRED_NODE_FEATURE_MISSING = PERM | NODE | 3
    INVALID_ONION_VERSION = BADONION | PERM | 4
    INVALID_ONION_HMAC = BADONION | PERM | 5
    INVALID_ONION_KEY = BADONION | PERM | 6
    TEMPORARY_CHANNEL_FAILURE = UPDATE | 7
    PERMANENT_CHANNEL_FAILURE = PERM | 8
    REQUIRED_CHANNEL_FEATURE_MISSING = PERM | 9
    UNKNOWN_NEXT_PEER = PERM | 10
    AMOUNT_BELOW_MINIMUM = UPDATE | 11
    FEE_INSUFFICIENT = UPDATE | 12
    INCORRECT_CLTV_EXPIRY = UPDATE | 13
    EXPIRY_TOO_SOON = UPDATE | 14
    INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS = PERM | 15
    FINAL_INCORRECT_CLTV_EXPIRY = 18
    FINAL_INCORRECT_HTLC_AMOUNT = 19
    CHANNEL_DISABLED = UPDATE | 20
    EXPIRY_TOO_FAR = 21
    INVALID_ONION_PAYLOAD = PERM | 22
    MPP_TIMEOUT = 23
    INVALID_ONION_BLINDING = BADONION | PERM | 24

    @property
    def is_badonion(self) -> bool:
        """True if the code reports an onion the next hop could not parse."""
        return bool(self & BADONION)

    @property
    def is_perm(self) -> bool:
        """True if the failure is permanent."""
        return bool(self & PERM)

    @property
    def is_node(self) -> bool:
        """True if the failure is of the whole node rather than one channel."""
        return bool(self & NODE)

    @property
    def is_update(self) -> bool:
        """True if the failure data encloses a channel_update."""
        return bool(self & UPDATE)


class FailureMessageError(DecodeError):
    """A failure_message too short to hold its u16 code."""

    code = "bad_failure_message"


class OnionRoutingFailure(LnemuError):
    """A routing failure: a BOLT 4 ``code`` and its code-specific ``data``.

    Unlike other lnemu errors, ``code`` here is the wire :class:`FailureCode`
    (an int), not a string; it is what the origin node acts on.
    """

    def __init__(self, code: FailureCode | int, data: bytes = b"") -> None:
        failure_code = _as_failure_code(code)
        name = failure_code.name.lower() if isinstance(failure_code, FailureCode) else "unknown"
        super().__init__(f"{name} (0x{int(failure_code):04x}) data={data.hex()}")
        self.code: FailureCode | int = failure_code
        self.data = data

    def to_bytes(self) -> bytes:
        """Serialize as a failure_message: u16 code then data."""
        return int(self.code).to_bytes(2, "big") + self.data

    @classmethod
    def from_bytes(cls, failure_message: bytes) -> OnionRoutingFailure:
        """Parse a failure_message; unknown codes are kept as plain ints."""
        if len(failure_message) < 2:
            raise FailureMessageError(
                f"failure_message has {len(failure_message)} bytes; needs at least 2 for its code"
            )
        code = int.from_bytes(failure_message[:2], "big")
        return cls(code, failure_message[2:])


def _as_failure_code(code: FailureCode | int) -> FailureCode | int:
    """Return ``code`` as a FailureCode when BOLT 4 defines it, else as an int."""
    if not 0 <= int(code) <= 0xFFFF:
        raise ValueError(f"failure code out of u16 range: {code}")
    try:
        return FailureCode(code)
    except ValueError:
        return int(code)
