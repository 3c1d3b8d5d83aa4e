"""BOLT 11 invoices: the spec's examples, hand-made invalid forms, and property tests."""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
from coincurve import PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.crypto import bech32, bolt11
from emulator.crypto import bolt11_errors as errors
from emulator.crypto.bolt11 import FallbackAddress, Invoice, RouteHintHop, UnknownTag
from emulator.errors import DecodeError
from tests.conftest import load_vector

VECTORS = load_vector("bolt11-examples.json")
PRIV_KEY = bytes.fromhex(VECTORS["priv_key"])
PAYEE = bytes.fromhex(VECTORS["payee_pubkey"])
PAYMENT_HASH = bytes.fromhex(VECTORS["payment_hash_default"])
PAYMENT_SECRET = bytes.fromhex(VECTORS["payment_secret_default"])
TIMESTAMP = VECTORS["timestamp_default"]
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CHOCOLATE = (
    "One piece of chocolate cake, one icecream cone, one pickle, one slice of swiss cheese, "
    "one slice of salami, one lollypop, one piece of cherry pie, one sausage, one cupcake, "
    "and one slice of watermelon"
)
BLOCKSTREAM = (
    'Blockstream Store: 88.85 USD for Blockstream Ledger Nano S x 1, "Back In My Day" Sticker '
    'x 2, "I Got Lightning Working" Sticker x 2 and 1 more items'
)
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58_hash(address: str) -> bytes:
    """The 20-byte hash inside a base58check P2PKH/P2SH address (checksum verified)."""
    number = 0
    for char in address:
        number = number * 58 + _BASE58.index(char)
    raw = number.to_bytes(25, "big")
    assert hashlib.sha256(hashlib.sha256(raw[:21]).digest()).digest()[:4] == raw[21:]
    return raw[1:21]


def segwit_program(address: str) -> tuple[int, bytes]:
    """Witness version and program of a bc1 address (checksum not checked: bech32m for v1)."""
    values = [bech32.CHARSET.index(char) for char in address.rsplit("1", 1)[1][:-6]]
    return values[0], bech32.u5_to_bytes(values[1:])


def features(*bits: int) -> int:
    return sum(1 << bit for bit in bits)


def scid(block: int, tx: int, output: int) -> int:
    return block << 40 | tx << 16 | output


def hop(pubkey_hex: str, short_channel_id: int, base: int, ppm: int, delta: int) -> RouteHintHop:
    return RouteHintHop(bytes.fromhex(pubkey_hex), short_channel_id, base, ppm, delta)


HOPS_VIA_029E = [
    hop("029e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
        0x0102030405060708, 1, 20, 3),
    hop("039e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
        0x030405060708090A, 2, 30, 4),
]
HOP_VIA_03D0 = hop("03d06758583bb5154774a6eb221b1276c9e82d65bbaceca806d90e20c108f4b1c7",
                   scid(589390, 3312, 1), 1000, 2500, 40)
DONATION = {"description": "Please consider supporting this project"}
COFFEE = {"amount_msat": 250_000_000, "expiry": 60}
COFFEE_BEANS = {"amount_msat": 2_500_000_000, "description": "coffee beans",
                "features": features(8, 14, 99)}
CHOCOLATE_HASH = {"amount_msat": 2_000_000_000,
                  "description_hash": hashlib.sha256(CHOCOLATE.encode()).digest()}


def base58_fallback(address: str, **extra: object) -> dict:
    version = 17 if address[0] in "1mn" else 18  # P2PKH (main/test) or P2SH
    fallback = FallbackAddress(version, base58_hash(address))
    return {**CHOCOLATE_HASH, "fallback_addresses": [fallback], **extra}


def segwit_fallback(address: str) -> dict:
    return {**CHOCOLATE_HASH, "fallback_addresses": [FallbackAddress(*segwit_program(address))]}


# Per example (same order as the JSON): the title's start, then the fields that differ from
# DEFAULTS (mainnet, default payment hash/secret/timestamp, any amount, expiry 3600, cltv 18,
# features 8+14, no fallback, route hint or metadata).
EXPECTED: list[tuple[str, dict]] = [
    ("Please make a donation", DONATION),
    ("Please send $3", {**COFFEE, "description": "1 cup coffee"}),
    ("Please send 0.0025 BTC", {**COFFEE, "description": "ナンセンス 1杯"}),
    ("Now send $24", CHOCOLATE_HASH),
    ("The same, on testnet", base58_fallback("mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP", currency="tb")),
    ("On mainnet, with fallback address 1Rusty",
     base58_fallback("1RustyRX2oai4EYYDpQGWvEL62BBGqN9T", route_hints=[HOPS_VIA_029E])),
    ("On mainnet, with fallback (P2SH)", base58_fallback("3EktnHQD7RiAE6uzMj2ZifT9YgRrkSgzQX")),
    ("On mainnet, with fallback (P2WPKH)",
     segwit_fallback("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")),
    ("On mainnet, with fallback (P2WSH)",
     segwit_fallback("bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3")),
    ("On mainnet, with fallback (P2TR)",
     segwit_fallback("bc1pptdvg0d2nj99568qn6ssdy4cygnwuxgw2ukmnwgwz7jpqjz2kszse2s3lm")),
    ("Please send 0.00967878534 BTC", {
        "amount_msat": 967_878_534, "timestamp": 1572468703, "description": BLOCKSTREAM,
        "payment_hash": bytes.fromhex(
            "462264ede7e14047e9b249da94fefc47f41f7d02ee9b091815a5506bc8abf75f"),
        "expiry": 604800, "min_final_cltv_expiry_delta": 10, "route_hints": [[HOP_VIA_03D0]]}),
    ("Please send $30 for coffee beans", COFFEE_BEANS),
    ("Same, but all upper case.", COFFEE_BEANS),
    ("Same, but including fields which must be ignored.", COFFEE_BEANS),
    ("Please send 0.01 BTC with payment metadata", {
        "amount_msat": 1_000_000_000, "description": "payment metadata inside",
        "metadata": bytes.fromhex("01fafaf0"), "features": features(8, 14, 48)}),
    ("Public-key recovery with high-S signature", DONATION),
]
DEFAULTS = {
    "currency": "bc", "amount_msat": None, "timestamp": TIMESTAMP, "payment_hash": PAYMENT_HASH,
    "payment_secret": PAYMENT_SECRET, "description": None, "description_hash": None,
    "expiry": 3600, "min_final_cltv_expiry_delta": 18, "metadata": None, "route_hints": [],
    "fallback_addresses": [], "features": features(8, 14),
}
DECODE_ONLY = {"Same, but all upper case.", "Same, but including fields which must be ignored.",
               "Public-key recovery with high-S signature"}
VALID = [
    pytest.param(vector, expected, id=vector["title"])
    for vector, (title, expected) in zip(VECTORS["valid"], EXPECTED, strict=True)
]
assert all(param.id.startswith(title) for param, (title, _) in zip(VALID, EXPECTED, strict=True))


def valid_vector(title: str) -> dict:
    return next(vector for vector in VECTORS["valid"] if vector["title"] == title)


@pytest.mark.parametrize(("vector", "expected"), VALID)
def test_valid_example_decodes_field_by_field(vector: dict, expected: dict) -> None:
    """Every field of the decoded example matches the spec's title and breakdown."""
    invoice = bolt11.decode(vector["invoice"])
    for name, value in {**DEFAULTS, **expected}.items():
        assert getattr(invoice, name) == value, name
    assert invoice.is_expired(now=invoice.timestamp + invoice.expiry + 1)
    assert not invoice.is_expired(now=invoice.timestamp)
    if vector["title"].startswith("Public-key recovery with high-S"):
        # BOLT 11 readers must accept high-S without `n`; recovery yields another valid key.
        assert int.from_bytes(invoice.signature[32:64], "big") > CURVE_ORDER // 2
        assert len(invoice.payee) == 33 and invoice.payee != PAYEE
    else:
        assert invoice.payee == PAYEE
        assert not invoice.include_payee_tag


@pytest.mark.parametrize(("vector", "expected"), [p for p in VALID if p.id not in DECODE_ONLY])
def test_valid_example_reencodes_byte_for_byte(vector: dict, expected: dict) -> None:
    """Re-encoding the decoded fields with the spec's key reproduces the example exactly."""
    assert bolt11.encode(bolt11.decode(vector["invoice"]), PRIV_KEY) == vector["invoice"]


def test_upper_case_example_reencodes_as_lower_case() -> None:
    upper = valid_vector("Same, but all upper case.")["invoice"]
    assert bolt11.encode(bolt11.decode(upper), PRIV_KEY) == upper.lower()


def test_ignored_fields_are_kept_raw_in_order() -> None:
    vector = valid_vector("Same, but including fields which must be ignored.")
    invoice = bolt11.decode(vector["invoice"])
    assert [tag.tag for tag in invoice.unknown_tags] == list("2fpphhssnn")
    assert invoice.unknown_tags[1].data[0] == 19  # fallback version 19: unknown, skipped
    assert bolt11.encode(invoice, PRIV_KEY) == vector["invoice"]


INVALID_ERRORS = {
    "Same, but adding invalid unknown feature 100": errors.UnknownRequiredFeatureError,
    "Bech32 checksum is invalid.": errors.InvalidChecksumError,
    "Malformed bech32 string (no 1)": errors.MissingSeparatorError,
    "Malformed bech32 string (mixed case)": errors.MixedCaseError,
    "Signature is not recoverable.": errors.SignatureRecoveryError,
    "String is too short.": errors.TooShortError,
    "Invalid multiplier": errors.InvalidMultiplierError,
    "Invalid sub-millisatoshi precision.": errors.SubMillisatoshiAmountError,
    "Missing required `s` field.": errors.MissingPaymentSecretError,
    "Non canonical signature (high-S) with 'n' field defined": errors.NonCanonicalSignatureError,
}


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["title"]) for v in VECTORS["invalid"]])
def test_invalid_example_is_rejected_with_its_own_error(vector: dict) -> None:
    with pytest.raises(errors.Bolt11Error) as caught:
        bolt11.decode(vector["invoice"])
    assert caught.type is INVALID_ERRORS[vector["title"]]
    assert isinstance(caught.value, DecodeError)


def test_every_invalid_example_has_a_distinct_error_class() -> None:
    assert len(set(INVALID_ERRORS.values())) == len(VECTORS["invalid"]) == 10


def test_unknown_required_feature_names_the_bit() -> None:
    with pytest.raises(errors.UnknownRequiredFeatureError) as caught:
        bolt11.decode(VECTORS["invalid"][0]["invoice"])
    assert caught.value.bits == [100]


# ---------------------------------------------------------------- hand-made invoices


def field(letter: str, payload: bytes | list[int]) -> tuple[str, list[int]]:
    data = bech32.bytes_to_u5(payload) if isinstance(payload, bytes) else payload
    return letter, data


def raw_invoice(hrp: str, fields: list[tuple[str, list[int]]], key: bytes = PRIV_KEY) -> str:
    """Sign arbitrary tagged fields under ``hrp``, bypassing encode's checks."""
    data = bech32.int_to_u5(TIMESTAMP, 7)
    for letter, payload in fields:
        data += [bech32.CHARSET.index(letter), *bech32.int_to_u5(len(payload), 2), *payload]
    digest = hashlib.sha256(hrp.encode() + bech32.u5_to_bytes(data, pad=True)).digest()
    signature = PrivateKey(key).sign_recoverable(digest, hasher=None)
    return bech32.encode(hrp, data + bech32.bytes_to_u5(signature))


BASIC_FIELDS = [field("p", PAYMENT_HASH), field("s", PAYMENT_SECRET), field("d", b"x")]
OTHER_PUBKEY = PrivateKey(bytes(31) + b"\x07").public_key.format()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(raw_invoice("lnxy", BASIC_FIELDS), errors.UnknownCurrencyError, id="currency"),
        pytest.param(raw_invoice("lnbcrt", BASIC_FIELDS).replace("lnbcrt", "lnbcr", 1),
                     errors.InvalidChecksumError, id="hrp-edited"),
        pytest.param(raw_invoice("xnbc", BASIC_FIELDS), errors.InvalidPrefixError, id="prefix"),
        pytest.param(raw_invoice("lnbc0m", BASIC_FIELDS), errors.InvalidAmountError, id="zero"),
        pytest.param(raw_invoice("lnbc012m", BASIC_FIELDS), errors.InvalidAmountError,
                     id="leading-0"),
        pytest.param(raw_invoice("lnbc1" + "0" * 20, BASIC_FIELDS), errors.InvalidAmountError,
                     id="huge"),
        pytest.param(raw_invoice("lnbc25mm", BASIC_FIELDS), errors.InvalidMultiplierError, id="mm"),
        pytest.param(raw_invoice("lnbc", BASIC_FIELDS[1:]), errors.MissingPaymentHashError,
                     id="no-p"),
        pytest.param(raw_invoice("lnbc", [field("p", PAYMENT_HASH[:31])] + BASIC_FIELDS[1:]),
                     errors.MissingPaymentHashError, id="short-p-skipped"),
        pytest.param(raw_invoice("lnbc", BASIC_FIELDS[:2]), errors.MissingDescriptionError,
                     id="no-d"),
        pytest.param(raw_invoice("lnbc", [*BASIC_FIELDS[:2], field("d", b"\xff")]),
                     errors.MalformedFieldError, id="bad-utf8"),
        pytest.param(raw_invoice("lnbc", [*BASIC_FIELDS, field("r", bytes(50))]),
                     errors.MalformedFieldError, id="partial-hop"),
        pytest.param(raw_invoice("lnbc", [*BASIC_FIELDS, field("n", b"\x05" + bytes(32))]),
                     errors.MalformedFieldError, id="bad-n-key"),
        pytest.param(raw_invoice("lnbc", [*BASIC_FIELDS, field("n", OTHER_PUBKEY)]),
                     errors.SignatureMismatchError, id="n-mismatch"),
        pytest.param("lnbc1qqqqqqqbqqqqqq", errors.InvalidCharacterError, id="char-b"),
        pytest.param("lnbc1é", errors.InvalidCharacterError, id="non-ascii"),
        pytest.param("1qqqqqqqq", errors.MissingSeparatorError, id="empty-hrp"),
        pytest.param("lnbc1qqqq", errors.TooShortError, id="no-checksum"),
    ],
)
def test_hand_made_invalid_invoice(text: str, error: type[errors.Bolt11Error]) -> None:
    with pytest.raises(errors.Bolt11Error) as caught:
        bolt11.decode(text)
    assert caught.type is error


def test_truncated_tagged_field_is_malformed() -> None:
    hrp, data = "lnbc", bech32.int_to_u5(TIMESTAMP, 7) + [1, 0]  # a 2-value field header
    text = bech32.encode(hrp, data + [0] * 104)
    with pytest.raises(errors.MalformedFieldError):
        bolt11.decode(text)


def test_wrong_length_fields_are_skipped_and_first_valid_one_used() -> None:
    fields = [field("p", bytes(31)), field("p", PAYMENT_HASH), field("p", bytes(32))]
    fields += BASIC_FIELDS[1:]
    invoice = bolt11.decode(raw_invoice("lnbc", fields))
    assert invoice.payment_hash == PAYMENT_HASH
    assert invoice.tag_order == ["?p", "p", "?p", "s", "d"]


def test_n_field_is_checked_and_written_back() -> None:
    invoice = Invoice(PAYMENT_HASH, PAYMENT_SECRET, description="n", include_payee_tag=True)
    text = bolt11.encode(invoice, PRIV_KEY)
    decoded = bolt11.decode(text)
    assert decoded.include_payee_tag and decoded.payee == PAYEE
    assert bolt11.encode(decoded, PRIV_KEY) == text


def test_legacy_invoice_without_secret_decodes_when_allowed() -> None:
    text = raw_invoice("lnbc", [BASIC_FIELDS[0], BASIC_FIELDS[2]])
    assert bolt11.decode(text, require_payment_secret=False).payment_secret is None


def test_fresh_invoice_defaults() -> None:
    invoice = Invoice(PAYMENT_HASH, PAYMENT_SECRET)
    decoded = bolt11.decode(bolt11.encode(invoice, PRIV_KEY))
    assert decoded.currency == "bcrt" and decoded.amount_msat is None and decoded.description == ""
    assert decoded.expiry == 3600 and decoded.min_final_cltv_expiry_delta == 18
    assert decoded.tag_order == ["p", "s", "d", "c", "9"]  # BOLT 11: writers MUST include `c`
    assert invoice.expires_at == invoice.timestamp + 3600 and not invoice.is_expired()


@pytest.mark.parametrize(
    ("amount_msat", "hrp"),
    [(100_000_000_000, "lnbc1"), (1_000_000_000_000, "lnbc10"), (2_000_000_000, "lnbc20m"),
     (250_000_000, "lnbc2500u"), (100, "lnbc1n"), (967_878_534, "lnbc9678785340p"),
     (1, "lnbc10p")],
)
def test_amount_uses_shortest_multiplier(amount_msat: int, hrp: str) -> None:
    invoice = Invoice(PAYMENT_HASH, PAYMENT_SECRET, currency="bc", amount_msat=amount_msat)
    text = bolt11.encode(invoice, PRIV_KEY)
    assert text.startswith(hrp + "1")
    assert bolt11.decode(text).amount_msat == amount_msat


@pytest.mark.parametrize(
    "change",
    [{"currency": "ltc"}, {"payment_hash": bytes(31)}, {"amount_msat": 0},
     {"description": "a", "description_hash": bytes(32)}, {"payee": bytes(33)},
     {"payment_secret": None}, {"route_hints": [[]]}, {"timestamp": 1 << 35},
     {"fallback_addresses": [FallbackAddress(19, b"")]}, {"description": "x" * 640}],
)
def test_encode_refuses_what_a_writer_must_not_write(change: dict) -> None:
    invoice = dataclasses.replace(Invoice(PAYMENT_HASH, PAYMENT_SECRET, description="d"), **change)
    with pytest.raises(errors.Bolt11EncodeError):
        bolt11.encode(invoice, PRIV_KEY)


# ---------------------------------------------------------------- properties

_KEYS = st.integers(1, CURVE_ORDER - 1).map(lambda secret: secret.to_bytes(32, "big"))
_UNUSED_LETTERS = sorted(set(bech32.CHARSET) - set("psdhmnxcfr9"))
_HOPS = st.builds(
    RouteHintHop, st.sampled_from([PAYEE, OTHER_PUBKEY]), st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
)
_FALLBACKS = st.builds(FallbackAddress, st.integers(0, 18), st.binary(max_size=40))
_U5_TUPLES = st.lists(st.integers(0, 31), max_size=12).map(tuple)
_UNKNOWN_TAGS = st.builds(UnknownTag, st.sampled_from(_UNUSED_LETTERS), _U5_TUPLES)
_FEATURES = st.builds(
    lambda known, odd: known | odd,
    st.sets(st.sampled_from([8, 9, 14, 15, 16, 17, 48, 49])).map(lambda bits: features(*bits)),
    st.sets(st.integers(0, 150).map(lambda n: 2 * n + 1), max_size=4).map(
        lambda bits: features(*bits)
    ),
)


@st.composite
def invoices(draw: st.DrawFn) -> Invoice:
    """Random invoices that BOLT 11 lets a writer produce."""
    text_description = draw(st.booleans())
    return Invoice(
        payment_hash=draw(st.binary(min_size=32, max_size=32)),
        payment_secret=draw(st.binary(min_size=32, max_size=32)),
        currency=draw(st.sampled_from(bolt11.CURRENCIES)),
        amount_msat=draw(st.none() | st.integers(1, 21_000_000 * 10**11)),
        timestamp=draw(st.integers(0, 2**35 - 1)),
        description=draw(st.text(max_size=60)) if text_description else None,
        description_hash=None if text_description else draw(st.binary(min_size=32, max_size=32)),
        expiry=draw(st.integers(0, 2**40)),
        min_final_cltv_expiry_delta=draw(st.integers(0, 2**20)),
        metadata=draw(st.none() | st.binary(max_size=40)),
        include_payee_tag=draw(st.booleans()),
        route_hints=draw(st.lists(st.lists(_HOPS, min_size=1, max_size=3), max_size=2)),
        fallback_addresses=draw(st.lists(_FALLBACKS, max_size=2)),
        features=draw(_FEATURES),
        unknown_tags=draw(st.lists(_UNKNOWN_TAGS, max_size=2)),
    )


@settings(max_examples=150, deadline=None)
@given(invoice=invoices(), key=_KEYS)
def test_random_invoices_round_trip(invoice: Invoice, key: bytes) -> None:
    text = bolt11.encode(invoice, key)
    decoded = bolt11.decode(text)
    assert decoded == dataclasses.replace(invoice, payee=PrivateKey(key).public_key.format())
    assert bolt11.encode(decoded, key) == text


INVOICE_LIKE = r"\A(?i:ln(bc|tb|tbs|bcrt)[0-9]{0,12}[munpx]?1[" + bech32.CHARSET + r"]{0,200})\Z"
EDITS = st.tuples(
    st.sampled_from(["set", "insert", "delete"]), st.integers(0, 2000), st.integers(0, 31)
)


def _decode_or_bolt11_error(text: str) -> None:
    try:
        bolt11.decode(text)
    except errors.Bolt11Error:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | st.from_regex(INVOICE_LIKE))
def test_random_strings_only_raise_bolt11_errors(text: str) -> None:
    _decode_or_bolt11_error(text)


@settings(max_examples=300, deadline=None)
@given(
    hrp=st.sampled_from(["lnbc", "lntb", "lnbcrt", "lnbc25m", "lnbc10p", "lnbc1p", "ln", "lnxx2u"]),
    data=st.lists(st.integers(0, 31), max_size=400),
)
def test_random_data_with_valid_checksum_only_raises_bolt11_errors(
    hrp: str, data: list[int]
) -> None:
    _decode_or_bolt11_error(bech32.encode(hrp, data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(VECTORS["valid"]) - 1),
    edits=st.lists(EDITS, min_size=1, max_size=4),
    fix_checksum=st.booleans(),
)
def test_mutated_valid_invoices_only_raise_bolt11_errors(
    index: int, edits: list[tuple[str, int, int]], fix_checksum: bool
) -> None:
    """Edits to a valid invoice's data part (checksum kept or recomputed) never crash decode."""
    hrp, data = bech32.decode(VECTORS["valid"][index]["invoice"])
    for kind, position, value in edits:
        position %= len(data) + 1
        if kind == "insert":
            data.insert(position, value)
        elif position < len(data):
            data[position : position + 1] = [] if kind == "delete" else [value]
    if fix_checksum:
        text = bech32.encode(hrp, data)
    else:
        text = hrp + "1" + "".join(bech32.CHARSET[value] for value in data) + "qqqqqq"
    _decode_or_bolt11_error(text)
