"""BOLT 4 Sphinx: the spec vectors, the size limits, and round-trip properties."""

from __future__ import annotations

import hashlib

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.crypto import sphinx
from emulator.crypto.bigsize import decode_bigsize
from emulator.crypto.failures import FailureCode
from emulator.crypto.sphinx import (
    ErrorPacketError,
    OnionPeelError,
    OnionTooLargeError,
    PeeledOnion,
    SphinxError,
    build_error,
    build_onion,
    decode_error,
    max_payload_len,
    peel_onion,
    remaining_payload_room,
    wrap_error,
)
from emulator.errors import DecodeError
from tests.conftest import load_vector

ONION_VECTOR = load_vector("onion-test.json")
ERROR_VECTOR = load_vector("onion-error-test.json")
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ASSOCIATED_DATA = bytes.fromhex(ONION_VECTOR["generate"]["associated_data"])
SESSION_KEY = bytes.fromhex(ONION_VECTOR["generate"]["session_key"])
NODE_KEYS = [bytes.fromhex(key) for key in ONION_VECTOR["decode"]]


def _strip_length_prefix(prefixed: bytes) -> bytes:
    length, offset = decode_bigsize(prefixed)
    assert offset + length == len(prefixed)
    return prefixed[offset:]


VECTOR_HOPS = [
    (bytes.fromhex(hop["pubkey"]), _strip_length_prefix(bytes.fromhex(hop["payload"])))
    for hop in ONION_VECTOR["generate"]["hops"]
]
ERROR_HOPS = ERROR_VECTOR["generate"]["hops"]
FAILURE_MESSAGE = bytes.fromhex(ERROR_VECTOR["generate"]["failure_message"])


def _pubkey(privkey: bytes) -> bytes:
    return PrivateKey(privkey).public_key.format()


def _peel_route(onion: bytes, node_keys: list[bytes], associated_data: bytes) -> list[PeeledOnion]:
    """Peel hop by hop, as each node on the route would."""
    peeled: list[PeeledOnion] = []
    for node_key in node_keys:
        assert onion is not None, "route ended early"
        layer = peel_onion(onion, node_key, associated_data)
        peeled.append(layer)
        onion = layer.next_onion
    return peeled


# --- onion-test.json ----------------------------------------------------------


def test_vector_build_is_byte_exact() -> None:
    onion = build_onion(SESSION_KEY, VECTOR_HOPS, ASSOCIATED_DATA)
    assert onion.hex() == ONION_VECTOR["onion"]


@pytest.mark.parametrize("hop", range(len(NODE_KEYS)))
def test_vector_peel_gives_payload(hop: int) -> None:
    onion = bytes.fromhex(ONION_VECTOR["onion"])
    layer = _peel_route(onion, NODE_KEYS[: hop + 1], ASSOCIATED_DATA)[-1]
    assert layer.payload == VECTOR_HOPS[hop][1]
    assert layer.is_final == (hop == len(NODE_KEYS) - 1)


@pytest.mark.parametrize("hop", range(len(NODE_KEYS)))
def test_vector_peel_shared_secret_matches_error_vector(hop: int) -> None:
    # The error vector reuses the onion vector's keys and lists each hop's secret.
    onion = bytes.fromhex(ONION_VECTOR["onion"])
    layer = _peel_route(onion, NODE_KEYS[: hop + 1], ASSOCIATED_DATA)[-1]
    assert layer.shared_secret.hex() == ERROR_HOPS[hop]["hop_shared_secret"]


def test_vector_peel_with_wrong_associated_data_is_hmac_error() -> None:
    onion = bytes.fromhex(ONION_VECTOR["onion"])
    with pytest.raises(OnionPeelError) as info:
        peel_onion(onion, NODE_KEYS[0], b"\x43" * 32)
    assert info.value.failure_code is FailureCode.INVALID_ONION_HMAC
    assert info.value.sha256_of_onion == hashlib.sha256(onion).digest()


# --- onion-error-test.json ----------------------------------------------------


def _error_secret(hop: int) -> bytes:
    return bytes.fromhex(ERROR_HOPS[hop]["hop_shared_secret"])


@pytest.mark.parametrize("hop", range(len(ERROR_HOPS)))
def test_error_vector_ammag_key(hop: int) -> None:
    assert sphinx._derive_key(b"ammag", _error_secret(hop)).hex() == ERROR_HOPS[hop]["ammag_key"]


def test_error_vector_um_key_of_failing_hop() -> None:
    failing = ERROR_HOPS[-1]
    assert sphinx._derive_key(b"um", _error_secret(-1)).hex() == failing["um_key"]


def test_error_vector_failing_hop_plaintext() -> None:
    # wrap_error is its own inverse (an XOR), so it strips the failing hop's layer.
    plain = wrap_error(_error_secret(-1), build_error(_error_secret(-1), FAILURE_MESSAGE))
    assert plain[32:].hex() == ERROR_HOPS[-1]["payload"]
    um_key = bytes.fromhex(ERROR_HOPS[-1]["um_key"])
    assert plain[:32] == sphinx._hmac(um_key, plain[32:])


def _vector_error_packet() -> bytes:
    packet = build_error(_error_secret(-1), FAILURE_MESSAGE)
    for hop in reversed(range(len(ERROR_HOPS) - 1)):
        packet = wrap_error(_error_secret(hop), packet)
    return packet


def test_error_vector_packet_is_byte_exact() -> None:
    assert _vector_error_packet().hex() == ERROR_VECTOR["errorpacket"]


def test_error_vector_origin_decodes_hop_and_message() -> None:
    session_key = bytes.fromhex(ERROR_VECTOR["generate"]["session_key"])
    pubkeys = [bytes.fromhex(hop["pubkey"]) for hop in ERROR_HOPS]
    packet = bytes.fromhex(ERROR_VECTOR["errorpacket"])
    assert decode_error(session_key, pubkeys, packet) == (len(ERROR_HOPS) - 1, FAILURE_MESSAGE)


# --- limits and malformed input -------------------------------------------------


def _fake_route(num_hops: int, payload_len: int) -> list[tuple[bytes, bytes]]:
    return [(_pubkey(bytes([hop + 1]) * 32), bytes(payload_len)) for hop in range(num_hops)]


def test_twenty_seven_hops_fit_and_peel() -> None:
    hops = _fake_route(27, 2)
    onion = build_onion(SESSION_KEY, hops, ASSOCIATED_DATA)
    layers = _peel_route(onion, [bytes([hop + 1]) * 32 for hop in range(27)], ASSOCIATED_DATA)
    assert [layer.is_final for layer in layers] == [False] * 26 + [True]


def test_twenty_eight_hops_name_the_limit() -> None:
    with pytest.raises(OnionTooLargeError, match="at most 27"):
        build_onion(SESSION_KEY, _fake_route(28, 2), ASSOCIATED_DATA)


def test_oversized_payloads_name_the_limit() -> None:
    with pytest.raises(OnionTooLargeError, match="1300"):
        build_onion(SESSION_KEY, _fake_route(2, 620), ASSOCIATED_DATA)


@pytest.mark.parametrize(
    "hops",
    [
        pytest.param([], id="no-hops"),
        pytest.param([(_pubkey(b"\x01" * 32), b"\x00")], id="one-byte-payload"),
        pytest.param([(b"\x02" + b"\xff" * 32, b"\x00\x00")], id="pubkey-off-curve"),
        pytest.param([(b"\x02" * 32, b"\x00\x00")], id="pubkey-short"),
    ],
)
def test_bad_route_is_a_sphinx_error(hops: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(SphinxError):
        build_onion(SESSION_KEY, hops, ASSOCIATED_DATA)


@pytest.mark.parametrize(
    "lengths,room",
    [([], 1300), ([2], 1265), ([252], 1015), ([253], 1012), ([2] * 27, 355)],
)
def test_remaining_payload_room(lengths: list[int], room: int) -> None:
    assert remaining_payload_room(lengths) == room


@pytest.mark.parametrize(
    "room,longest", [(0, 0), (34, 1), (285, 252), (287, 252), (288, 253), (1300, 1265)]
)
def test_max_payload_len(room: int, longest: int) -> None:
    assert max_payload_len(room) == longest


def _onion_with_plaintext(plain_prefix: bytes) -> bytes:
    """A well-authenticated onion for NODE_KEYS[0] whose hop_payloads decrypt to ``plain_prefix``."""
    shared_secret = PrivateKey(NODE_KEYS[0]).ecdh(_pubkey(SESSION_KEY))
    plain = plain_prefix + bytes(sphinx.HOP_PAYLOADS_LEN - len(plain_prefix))
    rho_stream = sphinx._stream(sphinx._derive_key(b"rho", shared_secret), sphinx.HOP_PAYLOADS_LEN)
    routing_info = sphinx._xor(plain, rho_stream)
    mac = sphinx._hmac(sphinx._derive_key(b"mu", shared_secret), routing_info + ASSOCIATED_DATA)
    return b"\x00" + _pubkey(SESSION_KEY) + routing_info + mac


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"\x00", id="length-0-legacy"),
        pytest.param(b"\x01", id="length-1-reserved"),
        pytest.param(b"\xfd\x05\x00", id="length-1280-overflows"),
        pytest.param(b"\xfd\x00\x10", id="non-canonical-bigsize"),
    ],
)
def test_bad_payload_behind_valid_hmac(prefix: bytes) -> None:
    with pytest.raises(OnionPeelError) as info:
        peel_onion(_onion_with_plaintext(prefix), NODE_KEYS[0], ASSOCIATED_DATA)
    assert info.value.failure_code is FailureCode.INVALID_ONION_PAYLOAD
    assert info.value.shared_secret is not None  # so the node can send an encrypted error


@pytest.mark.parametrize(
    "onion,failure_code",
    [
        pytest.param(b"\x01" + bytes(1365), FailureCode.INVALID_ONION_VERSION, id="version-1"),
        pytest.param(bytes(100), FailureCode.INVALID_ONION_VERSION, id="short"),
        pytest.param(bytes(1366), FailureCode.INVALID_ONION_KEY, id="zero-pubkey"),
    ],
)
def test_malformed_onion_codes(onion: bytes, failure_code: FailureCode) -> None:
    with pytest.raises(OnionPeelError) as info:
        peel_onion(onion, NODE_KEYS[0], ASSOCIATED_DATA)
    assert info.value.failure_code is failure_code
    assert info.value.failure_code.is_badonion
    assert isinstance(info.value, DecodeError)


def test_error_message_longer_than_pad_area_round_trips() -> None:
    message = b"\x40\x0f" + bytes(300)
    packet = build_error(_error_secret(0), message)
    assert len(packet) == 32 + 2 + len(message) + 2
    pubkeys = [bytes.fromhex(hop["pubkey"]) for hop in ERROR_HOPS]
    assert decode_error(SESSION_KEY, pubkeys, packet) == (0, message)


def test_error_message_over_u16_is_refused() -> None:
    with pytest.raises(OnionTooLargeError):
        build_error(_error_secret(0), bytes(0x10000))


@pytest.mark.parametrize(
    "packet", [pytest.param(bytes(20), id="short"), pytest.param(bytes(292), id="zeros")]
)
def test_unauthenticated_error_packet(packet: bytes) -> None:
    pubkeys = [bytes.fromhex(hop["pubkey"]) for hop in ERROR_HOPS]
    with pytest.raises(ErrorPacketError):
        decode_error(SESSION_KEY, pubkeys, packet)


# --- properties -----------------------------------------------------------------

private_keys = st.integers(min_value=1, max_value=SECP256K1_ORDER - 1).map(
    lambda secret: secret.to_bytes(32, "big")
)


@st.composite
def routes(draw: st.DrawFn, max_hops: int = 20) -> tuple[bytes, list[bytes], list[bytes]]:
    """(session key, node private keys, payloads) for a route whose payloads fit."""
    num_hops = draw(st.integers(min_value=1, max_value=max_hops))
    node_keys = draw(st.lists(private_keys, min_size=num_hops, max_size=num_hops))
    per_hop_max = max_payload_len(sphinx.HOP_PAYLOADS_LEN // num_hops)
    sizes = st.integers(min_value=sphinx.MIN_PAYLOAD_LEN, max_value=per_hop_max)
    payload_lens = draw(st.lists(sizes, min_size=num_hops, max_size=num_hops))
    payloads = [draw(st.binary(min_size=size, max_size=size)) for size in payload_lens]
    return draw(private_keys), node_keys, payloads


@settings(max_examples=50, deadline=None)
@given(route=routes(), associated_data=st.binary(max_size=64), fill_final=st.booleans())
def test_build_then_peel_round_trips(
    route: tuple[bytes, list[bytes], list[bytes]], associated_data: bytes, fill_final: bool
) -> None:
    session_key, node_keys, payloads = route
    if fill_final:  # a final payload taking every byte the others leave
        room = remaining_payload_room([len(payload) for payload in payloads[:-1]])
        payloads[-1] = b"\x2a" * max_payload_len(room)
    hops = [(_pubkey(key), payload) for key, payload in zip(node_keys, payloads, strict=True)]
    onion = build_onion(session_key, hops, associated_data)
    assert len(onion) == sphinx.ONION_LEN
    layers = _peel_route(onion, node_keys, associated_data)
    assert [layer.payload for layer in layers] == payloads
    assert [layer.is_final for layer in layers] == [False] * (len(hops) - 1) + [True]


@settings(max_examples=40, deadline=None)
@given(
    route=routes(), failing=st.integers(min_value=0), message=st.binary(min_size=2, max_size=300)
)
def test_error_from_any_hop_decodes_to_that_hop(
    route: tuple[bytes, list[bytes], list[bytes]], failing: int, message: bytes
) -> None:
    session_key, node_keys, payloads = route
    failing %= len(node_keys)
    hops = [(_pubkey(key), payload) for key, payload in zip(node_keys, payloads, strict=True)]
    layers = _peel_route(build_onion(session_key, hops, b""), node_keys[: failing + 1], b"")
    packet = build_error(layers[failing].shared_secret, message)
    for layer in reversed(layers[:failing]):
        packet = wrap_error(layer.shared_secret, packet)
    assert decode_error(session_key, [pubkey for pubkey, _ in hops], packet) == (failing, message)


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0, max_value=sphinx.ONION_LEN - 1), mask=st.integers(1, 255))
def test_flipped_byte_is_refused(position: int, mask: int) -> None:
    onion = bytearray.fromhex(ONION_VECTOR["onion"])
    onion[position] ^= mask
    with pytest.raises(OnionPeelError) as info:
        peel_onion(bytes(onion), NODE_KEYS[0], ASSOCIATED_DATA)
    if position == 0:
        assert info.value.failure_code is FailureCode.INVALID_ONION_VERSION
    elif position <= sphinx.PUBKEY_LEN:  # a changed key is either off-curve or the wrong key
        assert info.value.failure_code in (
            FailureCode.INVALID_ONION_KEY,
            FailureCode.INVALID_ONION_HMAC,
        )
    else:
        assert info.value.failure_code is FailureCode.INVALID_ONION_HMAC


@settings(max_examples=60, deadline=None)
@given(
    onion=st.one_of(
        st.binary(max_size=1400),
        st.binary(min_size=sphinx.ONION_LEN, max_size=sphinx.ONION_LEN),
        # version 0 and a valid ephemeral key, so the HMAC check is reached
        st.tuples(private_keys, st.binary(min_size=1332, max_size=1332)).map(
            lambda parts: b"\x00" + _pubkey(parts[0]) + parts[1]
        ),
    )
)
def test_random_bytes_raise_only_typed_errors(onion: bytes) -> None:
    with pytest.raises(OnionPeelError) as info:
        peel_onion(onion, NODE_KEYS[0], ASSOCIATED_DATA)
    assert info.value.failure_code.is_badonion


@settings(max_examples=30, deadline=None)
@given(packet=st.binary(max_size=400))
def test_random_error_packets_raise_only_typed_errors(packet: bytes) -> None:
    pubkeys = [bytes.fromhex(hop["pubkey"]) for hop in ERROR_HOPS]
    with pytest.raises(ErrorPacketError):
        decode_error(SESSION_KEY, pubkeys, packet)
