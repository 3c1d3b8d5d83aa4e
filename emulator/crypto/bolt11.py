"""BOLT 11 invoices: encode and decode ``ln...`` payment requests.

Representation choices:

- ``RouteHintHop.short_channel_id`` is an ``int`` (the u64 ``block << 40 | tx << 16 | output``).
- ``Invoice.features`` is an ``int`` bit field: bit ``i`` set means feature bit ``i``.
- ``Invoice.payee`` is the 33-byte compressed node key. ``decode`` fills it from the ``n``
  field (checking the signature against it) or by signature recovery. ``encode`` derives
  the payee from the private key and never changes the invoice passed in; it writes an
  ``n`` field only when ``include_payee_tag`` is set (``decode`` sets it when ``n`` was there).
- ``Invoice.tag_order`` records the field layout of a decoded string so that re-encoding
  reproduces it byte for byte: entries are field letters, or ``"?"`` + letter for the next
  entry of ``unknown_tags`` (fields the reader skipped). It also says whether optional
  default-valued ``x``/``c``/``9`` fields were present. A fresh invoice (``tag_order`` None)
  is written in a fixed order and always carries ``c``.
- An invoice with neither ``description`` nor ``description_hash`` is written with an empty
  ``d`` field (BOLT 11: a writer MUST include exactly one ``d`` or ``h``).
"""
from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from emulator.crypto import bech32
from emulator.crypto.bolt11_errors import (
    Bolt11EncodeError,
    Bolt11Error,
    InvalidAmountError,
    InvalidMultiplierError,
    InvalidPrefixError,
    MalformedFieldError,
    MissingDescriptionError,
    MissingPaymentHashError,
    MissingPaymentSecretError,
    NonCanonicalSignatureError,
    SignatureMismatchError,
    SignatureRecoveryError,
    SubMillisatoshiAmountError,
    TooShortError,
    UnknownCurrencyError,
    UnknownRequiredFeatureError,
    from_bech32_error,
)

__all__ = [
    "Bolt11EncodeError", "Bolt11Error", "FallbackAddress", "Invoice", "RouteHintHop",
    "UnknownTag", "decode", "encode",
]  # the specific error classes live in emulator.crypto.bolt11_errors

CURRENCIES = ("bc", "tb", "tbs", "bcrt")
DEFAULT_CURRENCY = "bcrt"
DEFAULT_EXPIRY = 3600
DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA = 18

# BOLT 9 feature bits that may appear in invoices (the even, "required" bit of each pair).
VAR_ONION_OPTIN = 8
PAYMENT_SECRET = 14
BASIC_MPP = 16
PAYMENT_METADATA = 48
KNOWN_FEATURE_BITS = frozenset({VAR_ONION_OPTIN, PAYMENT_SECRET, BASIC_MPP, PAYMENT_METADATA})
DEFAULT_FEATURES = (1 << VAR_ONION_OPTIN) | (1 << PAYMENT_SECRET)

_TIMESTAMP_U5 = 7  # 35 bits
_SIGNATURE_U5 = 104  # 520 bits: 64-byte compact signature + recovery id
_MAX_FIELD_U5 = 1023  # data_length is 10 bits
_HOP_BYTES = 51  # pubkey 33 + scid 8 + fee base 4 + fee ppm 4 + cltv delta 2
_HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
# Amounts are counted in pico-bitcoin (0.1 msat) per multiplier letter; "" is whole bitcoin.
_PICO_BTC_PER_UNIT = {"": 10**12, "m": 10**9, "u": 10**6, "n": 10**3, "p": 1}
_MAX_AMOUNT_DIGITS = 20  # 21 million bitcoin is 2.1e19 pico-bitcoin


@dataclass(frozen=True)
class RouteHintHop:
    """One hop of an ``r`` route hint: the channel from ``pubkey`` toward the payee."""

    pubkey: bytes
    short_channel_id: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int


@dataclass(frozen=True)
class FallbackAddress:
    """An ``f`` on-chain fallback: witness version 0-16 + program, 17 P2PKH or 18 P2SH + hash."""

    version: int
    program: bytes


@dataclass(frozen=True)
class UnknownTag:
    """A tagged field the reader skipped, kept raw (letter and 5-bit values) for re-encoding."""

    tag: str
    data: tuple[int, ...]


def _now() -> int:
    return int(time.time())


@dataclass
class Invoice:
    """A BOLT 11 invoice; ``expiry`` is in seconds, ``timestamp`` in Unix seconds."""

    payment_hash: bytes
    payment_secret: bytes | None
    currency: str = DEFAULT_CURRENCY
    amount_msat: int | None = None
    timestamp: int = field(default_factory=_now)
    description: str | None = None
    description_hash: bytes | None = None
    expiry: int = DEFAULT_EXPIRY
    min_final_cltv_expiry_delta: int = DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA
    metadata: bytes | None = None
    payee: bytes | None = None
    include_payee_tag: bool = False
    route_hints: list[list[RouteHintHop]] = field(default_factory=list)
    fallback_addresses: list[FallbackAddress] = field(default_factory=list)
    features: int = DEFAULT_FEATURES
    unknown_tags: list[UnknownTag] = field(default_factory=list)
    tag_order: list[str] | None = field(default=None, compare=False, repr=False)
    signature: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def expires_at(self) -> int:
        """Unix time after which the invoice should no longer be paid."""
        return self.timestamp + self.expiry

    def is_expired(self, now: int | None = None) -> bool:
        """True once ``now`` (default: the current time) is past ``expires_at``."""
        return (_now() if now is None else now) > self.expires_at

    def has_feature(self, bit: int) -> bool:
        """True if feature ``bit`` is set as required or optional (either bit of its pair)."""
        even = bit & ~1
        return bool(self.features >> even & 0b11)


# ---------------------------------------------------------------- human-readable part


def _encode_amount(amount_msat: int | None) -> str:
    """The shortest exact amount + multiplier for ``amount_msat`` ('' for any amount)."""
    if amount_msat is None:
        return ""
    if amount_msat <= 0:
        raise Bolt11EncodeError(f"amount_msat must be positive, got {amount_msat}")
    amount_pico_btc = amount_msat * 10
    # The largest unit that divides the amount exactly gives the fewest digits.
    multiplier, unit = next(
        (letter, unit) for letter, unit in _PICO_BTC_PER_UNIT.items() if amount_pico_btc % unit == 0
    )
    digits = str(amount_pico_btc // unit)
    if len(digits) > _MAX_AMOUNT_DIGITS:
        raise Bolt11EncodeError(f"amount_msat {amount_msat} exceeds any bitcoin amount")
    return digits + multiplier


def _parse_hrp(hrp: str) -> tuple[str, int | None]:
    """Split ``ln<currency>[<amount><multiplier>]`` into currency and amount_msat."""
    if not hrp.startswith("ln"):
        raise InvalidPrefixError(f"human-readable part {hrp!r} does not start with 'ln'")
    match = re.fullmatch(r"([a-z]*)([0-9]*)(.*)", hrp[2:], re.DOTALL)
    assert match is not None  # every string matches
    currency, digits, multiplier = match.groups()
    if currency not in CURRENCIES:
        raise UnknownCurrencyError(f"unknown currency prefix {currency!r}")
    if not digits:
        if multiplier:
            raise InvalidAmountError(f"amount {multiplier!r} has no digits")
        return currency, None
    if multiplier not in _PICO_BTC_PER_UNIT:
        raise InvalidMultiplierError(f"invalid amount multiplier {multiplier!r}")
    if len(digits) > _MAX_AMOUNT_DIGITS:
        raise InvalidAmountError(f"amount of {len(digits)} digits exceeds any bitcoin amount")
    if digits.startswith("0"):
        raise InvalidAmountError(f"amount {digits!r} is zero or has leading zeros")
    amount_pico_btc = int(digits) * _PICO_BTC_PER_UNIT[multiplier]
    if amount_pico_btc % 10:
        raise SubMillisatoshiAmountError(f"{digits}{multiplier} is not a whole millisatoshi")
    return currency, amount_pico_btc // 10


# ---------------------------------------------------------------- field writers


def _pack_hop(hop: RouteHintHop) -> bytes:
    if len(hop.pubkey) != 33:
        raise Bolt11EncodeError("route hint pubkey must be 33 bytes")
    try:
        return (
            hop.pubkey
            + hop.short_channel_id.to_bytes(8, "big")
            + hop.fee_base_msat.to_bytes(4, "big")
            + hop.fee_proportional_millionths.to_bytes(4, "big")
            + hop.cltv_expiry_delta.to_bytes(2, "big")
        )
    except OverflowError as exc:
        raise Bolt11EncodeError(f"route hint value out of range: {hop}") from exc


def _was_present(invoice: Invoice, letter: str) -> bool:
    return invoice.tag_order is not None and letter in invoice.tag_order


def _bytes_field(value: bytes | None) -> list[list[int]]:
    return [] if value is None else [bech32.bytes_to_u5(value)]


def _write_description(invoice: Invoice, payee: bytes) -> list[list[int]]:
    if invoice.description is None and invoice.description_hash is not None:
        return []
    return [bech32.bytes_to_u5((invoice.description or "").encode())]


def _write_expiry(invoice: Invoice, payee: bytes) -> list[list[int]]:
    if invoice.expiry == DEFAULT_EXPIRY and not _was_present(invoice, "x"):
        return []
    return [bech32.int_to_u5(invoice.expiry)]


def _write_min_final_cltv(invoice: Invoice, payee: bytes) -> list[list[int]]:
    # BOLT 11: a writer MUST include one `c`; decoded legacy invoices without it stay so.
    value = invoice.min_final_cltv_expiry_delta
    if invoice.tag_order is not None and value == DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA:
        if not _was_present(invoice, "c"):
            return []
    return [bech32.int_to_u5(value)]


def _write_features(invoice: Invoice, payee: bytes) -> list[list[int]]:
    if invoice.features == 0 and not _was_present(invoice, "9"):
        return []
    return [bech32.int_to_u5(invoice.features)]


def _write_fallback(address: FallbackAddress) -> list[int]:
    if not 0 <= address.version <= 18:
        raise Bolt11EncodeError(f"fallback version {address.version} is not 0-18")
    return [address.version, *bech32.bytes_to_u5(address.program)]


_FieldWriter = Callable[[Invoice, bytes], list[list[int]]]

# Fresh invoices are written in this order; decoded ones follow their tag_order.
_WRITERS: dict[str, _FieldWriter] = {
    "p": lambda inv, payee: _bytes_field(inv.payment_hash),
    "s": lambda inv, payee: _bytes_field(inv.payment_secret),
    "d": _write_description,
    "h": lambda inv, payee: _bytes_field(inv.description_hash),
    "m": lambda inv, payee: _bytes_field(inv.metadata),
    "n": lambda inv, payee: _bytes_field(payee if inv.include_payee_tag else None),
    "x": _write_expiry,
    "c": _write_min_final_cltv,
    "f": lambda inv, payee: [_write_fallback(address) for address in inv.fallback_addresses],
    "r": lambda inv, payee: [
        bech32.bytes_to_u5(b"".join(_pack_hop(hop) for hop in route)) for route in inv.route_hints
    ],
    "9": _write_features,
}


def _ordered_fields(invoice: Invoice, payee: bytes) -> list[tuple[str, list[int]]]:
    """Every tagged field as (letter, 5-bit data), in ``tag_order`` first, then the rest."""
    pending = {letter: writer(invoice, payee) for letter, writer in _WRITERS.items()}
    unknown = list(invoice.unknown_tags)
    ordered: list[tuple[str, list[int]]] = []
    for entry in invoice.tag_order or []:
        if entry.startswith("?"):
            if unknown:
                tag = unknown.pop(0)
                ordered.append((tag.tag, list(tag.data)))
        elif pending.get(entry):
            ordered.append((entry, pending[entry].pop(0)))
    for letter, payloads in pending.items():
        ordered.extend((letter, payload) for payload in payloads)
    ordered.extend((tag.tag, list(tag.data)) for tag in unknown)
    return ordered


def _check_values(invoice: Invoice) -> None:
    """Refuse field values that do not fit their BOLT 11 encodings."""
    if invoice.currency not in CURRENCIES:
        raise Bolt11EncodeError(f"unknown currency {invoice.currency!r}")
    if len(invoice.payment_hash) != 32:
        raise Bolt11EncodeError("payment_hash must be 32 bytes")
    for name in ("payment_secret", "description_hash"):
        value = getattr(invoice, name)
        if value is not None and len(value) != 32:
            raise Bolt11EncodeError(f"{name} must be 32 bytes")
    if not 0 <= invoice.timestamp < 1 << (5 * _TIMESTAMP_U5):
        raise Bolt11EncodeError(f"timestamp {invoice.timestamp} does not fit in 35 bits")
    for name in ("expiry", "min_final_cltv_expiry_delta", "features"):
        if getattr(invoice, name) < 0:
            raise Bolt11EncodeError(f"{name} must not be negative")
    for tag in invoice.unknown_tags:
        if tag.tag not in bech32.CHARSET or any(not 0 <= item < 32 for item in tag.data):
            raise Bolt11EncodeError(f"unknown tag {tag} is not 5-bit data")


def _check_consistency(invoice: Invoice, payee: bytes) -> None:
    """Refuse combinations that BOLT 11 forbids a writer to produce."""
    if invoice.description is not None and invoice.description_hash is not None:
        raise Bolt11EncodeError("an invoice carries a description or its hash, not both")
    if invoice.payee is not None and invoice.payee != payee:
        raise Bolt11EncodeError("invoice payee does not match the signing key")
    if invoice.has_feature(PAYMENT_SECRET) and invoice.payment_secret is None:
        raise Bolt11EncodeError("payment_secret feature set but no payment_secret")
    if any(not route for route in invoice.route_hints):
        raise Bolt11EncodeError("a route hint needs at least one hop")


def encode(invoice: Invoice, privkey: bytes) -> str:
    """Sign ``invoice`` with the payee's 32-byte ``privkey`` and return the bech32 string."""
    key = PrivateKey(privkey)
    payee = key.public_key.format(compressed=True)
    _check_values(invoice)
    _check_consistency(invoice, payee)
    hrp = "ln" + invoice.currency + _encode_amount(invoice.amount_msat)
    data = bech32.int_to_u5(invoice.timestamp, _TIMESTAMP_U5)
    for letter, payload in _ordered_fields(invoice, payee):
        if len(payload) > _MAX_FIELD_U5:
            raise Bolt11EncodeError(f"field {letter!r} longer than {_MAX_FIELD_U5} 5-bit values")
        data += [bech32.CHARSET.index(letter), *bech32.int_to_u5(len(payload), 2), *payload]
    digest = _signing_digest(hrp, data)
    # libsecp256k1 signs deterministically (RFC 6979) and always produces lower-S.
    signature = key.sign_recoverable(digest, hasher=None)
    return bech32.encode(hrp, data + bech32.bytes_to_u5(signature))


def _signing_digest(hrp: str, data: list[int]) -> bytes:
    """BOLT 11: SHA256 of the hrp's UTF-8 bytes + the data (before the signature) 0-padded."""
    return hashlib.sha256(hrp.encode() + bech32.u5_to_bytes(data, pad=True)).digest()


# ---------------------------------------------------------------- field readers


def _fixed_bytes_reader(attribute: str, length_u5: int) -> Callable[[Invoice, list[int]], bool]:
    """A reader for p/s/h/n: BOLT 11 says skip the field when its length is not the expected."""

    def read(invoice: Invoice, data: list[int]) -> bool:
        if len(data) != length_u5:
            return False
        setattr(invoice, attribute, bech32.u5_to_bytes(data))
        return True

    return read


_read_payee_key = _fixed_bytes_reader("payee", 53)


def _read_payee(invoice: Invoice, data: list[int]) -> bool:
    if not _read_payee_key(invoice, data):
        return False
    try:
        PublicKey(invoice.payee)
    except ValueError as exc:
        raise MalformedFieldError("n field is not a valid public key") from exc
    invoice.include_payee_tag = True
    return True


def _read_description(invoice: Invoice, data: list[int]) -> bool:
    try:
        invoice.description = bech32.u5_to_bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFieldError("d field is not valid UTF-8") from exc
    return True


def _read_fallback(invoice: Invoice, data: list[int]) -> bool:
    if not data or data[0] > 18:
        return False  # BOLT 11: skip an `f` field with unknown version
    invoice.fallback_addresses.append(FallbackAddress(data[0], bech32.u5_to_bytes(data[1:])))
    return True


def _read_route(invoice: Invoice, data: list[int]) -> bool:
    raw = bech32.u5_to_bytes(data)
    if not raw or len(raw) % _HOP_BYTES:
        raise MalformedFieldError(f"r field of {len(raw)} bytes is not whole hops")
    route = []
    for offset in range(0, len(raw), _HOP_BYTES):
        hop = raw[offset : offset + _HOP_BYTES]
        route.append(
            RouteHintHop(
                pubkey=hop[:33],
                short_channel_id=int.from_bytes(hop[33:41], "big"),
                fee_base_msat=int.from_bytes(hop[41:45], "big"),
                fee_proportional_millionths=int.from_bytes(hop[45:49], "big"),
                cltv_expiry_delta=int.from_bytes(hop[49:51], "big"),
            )
        )
    invoice.route_hints.append(route)
    return True


def _int_reader(attribute: str) -> Callable[[Invoice, list[int]], bool]:
    def read(invoice: Invoice, data: list[int]) -> bool:
        setattr(invoice, attribute, bech32.u5_to_int(data))
        return True

    return read


def _read_metadata(invoice: Invoice, data: list[int]) -> bool:
    invoice.metadata = bech32.u5_to_bytes(data)
    return True


_READERS: dict[str, Callable[[Invoice, list[int]], bool]] = {
    "p": _fixed_bytes_reader("payment_hash", 52),
    "s": _fixed_bytes_reader("payment_secret", 52),
    "h": _fixed_bytes_reader("description_hash", 52),
    "n": _read_payee,
    "d": _read_description,
    "m": _read_metadata,
    "x": _int_reader("expiry"),
    "c": _int_reader("min_final_cltv_expiry_delta"),
    "9": _int_reader("features"),
    "f": _read_fallback,
    "r": _read_route,
}
_REPEATABLE = frozenset({"f", "r"})


def _read_tagged_fields(invoice: Invoice, data: list[int]) -> None:
    """Parse the tagged fields into ``invoice``, recording their order in ``tag_order``."""
    order: list[str] = []
    invoice.tag_order = order
    position = 0
    while position < len(data):
        if position + 3 > len(data):
            raise MalformedFieldError("truncated tagged field header")
        letter = bech32.CHARSET[data[position]]
        length = bech32.u5_to_int(data[position + 1 : position + 3])
        payload = data[position + 3 : position + 3 + length]
        if len(payload) != length:
            raise MalformedFieldError(f"tagged field {letter!r} runs past the signature")
        position += 3 + length
        reader = _READERS.get(letter)
        # A payer SHOULD use the first valid field: later copies of single fields are kept raw.
        duplicate = letter in order and letter not in _REPEATABLE
        if reader is not None and not duplicate and reader(invoice, payload):
            order.append(letter)
        else:
            invoice.unknown_tags.append(UnknownTag(letter, tuple(payload)))
            order.append("?" + letter)


def _check_fields(invoice: Invoice, require_payment_secret: bool) -> None:
    """Mandatory fields present; no unknown even ("required") feature bits."""
    order = invoice.tag_order or []
    if "p" not in order:
        raise MissingPaymentHashError("no valid payment hash (p) field")
    if require_payment_secret and "s" not in order:
        raise MissingPaymentSecretError("no valid payment secret (s) field")
    if "d" not in order and "h" not in order:
        raise MissingDescriptionError("neither description (d) nor description hash (h)")
    unknown_even = [
        bit
        for bit in range(0, invoice.features.bit_length(), 2)
        if invoice.features >> bit & 1 and bit not in KNOWN_FEATURE_BITS
    ]
    if unknown_even:
        raise UnknownRequiredFeatureError(unknown_even)


def _authenticate(signature: bytes, digest: bytes, claimed_payee: bytes | None) -> bytes:
    """The payee key: checked against ``n`` when present, else recovered from the signature."""
    if claimed_payee is not None:
        if int.from_bytes(signature[32:64], "big") > _HALF_CURVE_ORDER:
            raise NonCanonicalSignatureError("high-S signature with an n field")
        try:
            der = cdata_to_der(deserialize_compact(signature[:64]))
        except ValueError as exc:
            raise SignatureMismatchError("signature cannot be parsed") from exc
        if not PublicKey(claimed_payee).verify(der, digest, hasher=None):
            raise SignatureMismatchError("signature does not match the n field")
        return claimed_payee
    try:
        # Recovery accepts high-S signatures, as BOLT 11 requires without an `n` field.
        recovered = PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except ValueError as exc:
        raise SignatureRecoveryError(f"cannot recover a public key: {exc}") from exc
    return recovered.format(compressed=True)


def decode(text: str, *, require_payment_secret: bool = True) -> Invoice:
    """Parse and authenticate a BOLT 11 string (either case); raise a Bolt11Error if invalid."""
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as exc:
        raise from_bech32_error(exc) from exc
    currency, amount_msat = _parse_hrp(hrp)
    if len(data) < _TIMESTAMP_U5 + _SIGNATURE_U5:
        raise TooShortError("data part too short for timestamp and signature")
    body, signature_u5 = data[:-_SIGNATURE_U5], data[-_SIGNATURE_U5:]
    invoice = Invoice(
        payment_hash=b"",
        payment_secret=None,
        currency=currency,
        amount_msat=amount_msat,
        timestamp=bech32.u5_to_int(body[:_TIMESTAMP_U5]),
        features=0,
    )
    _read_tagged_fields(invoice, body[_TIMESTAMP_U5:])
    _check_fields(invoice, require_payment_secret)
    signature = bech32.u5_to_bytes(signature_u5)
    claimed_payee = invoice.payee if invoice.include_payee_tag else None
    invoice.payee = _authenticate(signature, _signing_digest(hrp, body), claimed_payee)
    invoice.signature = signature
    return invoice
