"""The schema table: every message type lnemu processes exchange, and its fields.

Lightning messages keep their BOLT 1/2/7 names and field names but travel as
msgpack maps instead of BOLT binary. ``disconnect`` is lnemu's stand-in for a TCP
close: it ends a session on both sides. The envelope (``emulator.envelope``) checks
every decoded body against this table; nothing else interprets raw messages.

A field spec is ``(name, kind, required)``. Kinds:
``bytes32``/``pubkey``/``sig`` fixed-size bytes, ``bytes`` any bytes, ``u8``/``u16``/
``u32``/``u64`` unsigned ints of that width, ``int`` any int, ``str``, ``bool``,
``list``, ``map`` and ``any``.
"""
from __future__ import annotations

from typing import NamedTuple


class Field(NamedTuple):
    name: str
    kind: str
    required: bool = True


def _f(spec: str) -> tuple[Field, ...]:
    """Parse a compact field list: ``"name:kind, name?:kind"`` (``?`` = optional)."""
    fields = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, kind = item.split(":")
        optional = name.endswith("?")
        fields.append(Field(name.rstrip("?"), kind, not optional))
    return tuple(fields)


# Peer-to-peer (BOLT 1, 2, 7) plus lnemu's transport-level ``disconnect``.
P2P_MESSAGES: dict[str, tuple[Field, ...]] = {
    # BOLT 1
    "init": _f("session:bytes, node_id:pubkey, features:int, networks?:list, alias?:str,"
               "address?:str"),
    "error": _f("channel_id:bytes32, data:str"),
    "warning": _f("channel_id:bytes32, data:str"),
    "ping": _f("num_pong_bytes:u16, ignored?:bytes"),
    "pong": _f("ignored:bytes"),
    "disconnect": _f("reason:str"),
    # BOLT 2: channel establishment
    "open_channel": _f(
        "chain_hash:bytes32, temporary_channel_id:bytes32, funding_satoshis:u64,"
        "push_msat:u64, dust_limit_satoshis:u64, max_htlc_value_in_flight_msat:u64,"
        "channel_reserve_satoshis:u64, htlc_minimum_msat:u64, feerate_per_kw:u32,"
        "to_self_delay:u16, max_accepted_htlcs:u16, funding_pubkey:pubkey,"
        "revocation_basepoint:pubkey, payment_basepoint:pubkey,"
        "delayed_payment_basepoint:pubkey, htlc_basepoint:pubkey,"
        "first_per_commitment_point:pubkey, channel_flags:u8, tlvs?:map"
    ),
    "accept_channel": _f(
        "temporary_channel_id:bytes32, dust_limit_satoshis:u64,"
        "max_htlc_value_in_flight_msat:u64, channel_reserve_satoshis:u64,"
        "htlc_minimum_msat:u64, minimum_depth:u32, to_self_delay:u16,"
        "max_accepted_htlcs:u16, funding_pubkey:pubkey, revocation_basepoint:pubkey,"
        "payment_basepoint:pubkey, delayed_payment_basepoint:pubkey,"
        "htlc_basepoint:pubkey, first_per_commitment_point:pubkey, tlvs?:map"
    ),
    "funding_created": _f(
        "temporary_channel_id:bytes32, funding_txid:bytes32, funding_output_index:u16,"
        "signature:sig"
    ),
    "funding_signed": _f("channel_id:bytes32, signature:sig"),
    "channel_ready": _f("channel_id:bytes32, second_per_commitment_point:pubkey, tlvs?:map"),
    # BOLT 2: close
    "shutdown": _f("channel_id:bytes32, scriptpubkey:any"),
    "closing_signed": _f("channel_id:bytes32, fee_satoshis:u64, signature:sig, tlvs?:map"),
    # BOLT 2: normal operation
    "update_add_htlc": _f(
        "channel_id:bytes32, id:u64, amount_msat:u64, payment_hash:bytes32,"
        "cltv_expiry:u32, onion_routing_packet:bytes, tlvs?:map"
    ),
    "update_fulfill_htlc": _f("channel_id:bytes32, id:u64, payment_preimage:bytes32"),
    "update_fail_htlc": _f("channel_id:bytes32, id:u64, reason:bytes"),
    "update_fail_malformed_htlc": _f(
        "channel_id:bytes32, id:u64, sha256_of_onion:bytes32, failure_code:u16"
    ),
    "commitment_signed": _f("channel_id:bytes32, signature:sig, htlc_signatures:list"),
    "revoke_and_ack": _f(
        "channel_id:bytes32, per_commitment_secret:bytes32, next_per_commitment_point:pubkey"
    ),
    "update_fee": _f("channel_id:bytes32, feerate_per_kw:u32"),
    "channel_reestablish": _f(
        "channel_id:bytes32, next_commitment_number:u64,"
        "next_revocation_number:u64, your_last_per_commitment_secret:bytes32,"
        "my_current_per_commitment_point:pubkey"
    ),
    # BOLT 7
    "announcement_signatures": _f(
        "channel_id:bytes32, short_channel_id:u64, node_signature:sig, bitcoin_signature:sig"
    ),
    "channel_announcement": _f(
        "node_signature_1:sig, node_signature_2:sig, bitcoin_signature_1:sig,"
        "bitcoin_signature_2:sig, features:int, chain_hash:bytes32, short_channel_id:u64,"
        "node_id_1:pubkey, node_id_2:pubkey, bitcoin_key_1:pubkey, bitcoin_key_2:pubkey"
    ),
    "channel_update": _f(
        "signature:sig, chain_hash:bytes32, short_channel_id:u64, timestamp:u32,"
        "message_flags:u8, channel_flags:u8, cltv_expiry_delta:u16, htlc_minimum_msat:u64,"
        "fee_base_msat:u32, fee_proportional_millionths:u32, htlc_maximum_msat:u64"
    ),
    "node_announcement": _f(
        "signature:sig, features:int, timestamp:u32, node_id:pubkey, rgb_color:bytes,"
        "alias:str, addresses:list"
    ),
    "gossip_timestamp_filter": _f(
        "chain_hash:bytes32, first_timestamp:u32, timestamp_range:u32"
    ),
    # lnemu's watchtower (peers.watchtower): an encrypted justice blob and its receipt
    "tower_backup": _f("hint:bytes, blob:bytes"),
    "tower_ack": _f("hint:bytes"),
}

# Control RPC (runner/CLI <-> any process) and the event stream.
CONTROL_MESSAGES: dict[str, tuple[Field, ...]] = {
    "request": _f("op:str, args:map, rid:int"),
    "reply": _f("rid:int, ok:bool, result?:any, error?:map"),
    "event": _f("ts:any, proc:str, kind:str, data:map"),
    "block": _f("height:u32, hash:bytes32, prev_hash:bytes32, time:any, txids:list"),
}

SCHEMA: dict[str, tuple[Field, ...]] = {**P2P_MESSAGES, **CONTROL_MESSAGES}
