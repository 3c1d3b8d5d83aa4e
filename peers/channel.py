"""One channel: parameters, keys, the HTLC ledger and the commitment dance.

Pure logic apart from the observer hooks: methods check what BOLT 2 requires and
return the body of the message to send; the channel manager does the I/O and
persists before anything leaves the process. Commitments are built with
``peers.commitment`` for either side at any commitment number, so the same code
signs the remote's next commitment, checks ours, closes, and punishes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from emulator import policy
from emulator.crypto import keys as bolt3_keys
from emulator.crypto import shachain
from emulator.errors import LnemuError
from emulator.tx import OutPoint, Tx, sighash
from peers import commitment as cm
from peers.channel_state import ChannelState, StateMachine
from peers.htlc_ledger import HtlcLedger
from peers.htlc_types import Htlc, HtlcLedgerError, Side

MAX_CLTV_DELTA = 2016
KEEP_OLD_SIGS = 64  # revoked commitments a peer can still 'cheat' with


class ChannelError(LnemuError):
    """A request this channel cannot carry out now (checked before sending)."""

    code = "channel_error"


class ProtocolViolation(ChannelError):
    """The peer broke BOLT 2 (bad signature, limits, ids, secrets): fail the channel."""

    code = "protocol_violation"


@dataclass
class Params:
    """One side's BOLT 2 channel parameters and basepoints."""

    dust_limit_sat: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_sat: int
    htlc_minimum_msat: int
    to_self_delay: int
    max_accepted_htlcs: int
    basepoints: cm.Basepoints

    def to_wire(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in (
            "dust_limit_sat", "max_htlc_value_in_flight_msat", "channel_reserve_sat",
            "htlc_minimum_msat", "to_self_delay", "max_accepted_htlcs")},
            "basepoints": [self.basepoints.funding_pubkey, self.basepoints.revocation_basepoint,
                           self.basepoints.payment_basepoint,
                           self.basepoints.delayed_payment_basepoint,
                           self.basepoints.htlc_basepoint]}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Params:
        return cls(**{k: v for k, v in obj.items() if k != "basepoints"},
                   basepoints=cm.Basepoints(*obj["basepoints"]))


def channel_id_from_funding(txid: bytes, vout: int) -> bytes:
    """BOLT 2: funding txid XOR the output index in the last two bytes."""
    cid = bytearray(txid)
    cid[30] ^= vout >> 8
    cid[31] ^= vout & 0xFF
    return bytes(cid)


@dataclass
class Channel:
    """The state of one channel, as one side sees it."""

    peer_id: bytes
    index: int
    local_is_opener: bool
    funding_sat: int
    push_msat: int
    feerate_per_kw: int
    local: Params
    secrets: cm.BaseSecrets
    temp_id: bytes
    remote: Params | None = None
    minimum_depth: int = 1
    announce: bool = True  # a public channel (channel_flags bit 0)
    channel_id: bytes = b""
    funding_outpoint: OutPoint | None = None
    funding_tx: dict[str, Any] | None = None  # the opener's, until it confirms
    funding_height: int | None = None
    short_channel_id: int | None = None
    ledger: HtlcLedger | None = None
    remote_points: dict[int, bytes] = field(default_factory=dict)
    revocations: shachain.RevocationStore = field(default_factory=shachain.RevocationStore)
    local_sigs: tuple[int, bytes, list[bytes]] | None = None  # (ctn, sig, htlc sigs) on ours
    old_sigs: dict[int, bytes] = field(default_factory=dict)  # revoked ctn -> remote sig (cheat)
    # old_sigs added and dropped since the last save (the store keeps them apart, each
    # written once): ([(ctn, sig)...], [ctn...])
    old_sig_changes: tuple[list[tuple[int, bytes]], list[int]] = field(
        default_factory=lambda: ([], []), repr=False)
    preimages: dict[bytes, bytes] = field(default_factory=dict)  # payment_hash -> preimage
    ready_sent: bool = False
    ready_received: bool = False
    shutdown_local: list | None = None   # our closing destination policy
    shutdown_remote: list | None = None
    closing_tx: dict[str, Any] | None = None
    onchain: dict[str, Any] = field(default_factory=dict)  # resolution after a close
    last_sent: str = ""  # "commit" or "revoke": which went out last (for retransmission)
    sent_fails: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    sm: StateMachine = field(default_factory=StateMachine)
    # derived, not stored: commitment keys and our points by commitment (each commitment
    # is built several times: to sign, to check, to retransmit)
    _derived: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    # --- identities and keys ------------------------------------------------------
    @property
    def state(self) -> ChannelState:
        return self.sm.state

    @property
    def cid(self) -> bytes:
        return self.channel_id or self.temp_id

    @cached_property  # both funding keys are fixed once the channel is negotiated
    def funding_cond(self) -> list:
        return cm.funding_policy(self.local.basepoints.funding_pubkey,
                                 self.remote.basepoints.funding_pubkey)

    @cached_property
    def obscuring_factor(self) -> int:
        opener, acceptor = (self.local, self.remote) if self.local_is_opener else \
            (self.remote, self.local)
        return cm.obscuring_factor(opener.basepoints.payment_basepoint,
                                   acceptor.basepoints.payment_basepoint)

    def local_secret(self, ctn: int) -> bytes:
        """Our per-commitment secret for our commitment number ``ctn``."""
        return self._cached(("secret", ctn), lambda: shachain.generate_from_seed(
            self.secrets.shachain_seed, shachain.index_for_commitment(ctn)))

    def local_point(self, ctn: int) -> bytes:
        return self._cached(("point", ctn), lambda: bolt3_keys.per_commitment_point(
            self.local_secret(ctn)))

    def commitment_keys(self, subject: Side, ctn: int) -> Any:
        """The keys of ``subject``'s commitment ``ctn``, derived once (with the secret we
        know of each: the point of ours, the revocation basepoint of theirs)."""
        if subject == Side.LOCAL:
            point = self.local_point(ctn)
            return self._cached(("keys", subject, point), lambda: cm.commitment_keys(
                point, self.local.basepoints, self.remote.basepoints,
                per_commitment_secret=self.local_secret(ctn)))
        point = self.remote_points[ctn]
        return self._cached(("keys", subject, point), lambda: cm.commitment_keys(
            point, self.remote.basepoints, self.local.basepoints,
            revocation_basepoint_secret=self.secrets.revocation_basepoint_secret))

    def warm(self) -> None:
        """Derive the keys of both sides' next commitments ahead of time (while we wait
        for the peer), so that signing or checking them does not wait for it."""
        if self.ledger is None or self.remote is None:
            return
        local_next = self.ledger.ctn_latest(Side.LOCAL) + 1
        self.commitment_keys(Side.LOCAL, local_next)
        self.local_point(local_next + 1)  # sent in the revoke_and_ack for local_next
        remote_next = self.ledger.ctn_latest(Side.REMOTE) + 1
        if remote_next in self.remote_points:
            self.commitment_keys(Side.REMOTE, remote_next)

    def _cached(self, key: tuple, make: Any) -> Any:
        found = self._derived.get(key)
        if found is None:
            if len(self._derived) >= 64:  # only recent commitments are built again
                del self._derived[next(iter(self._derived))]
            found = self._derived[key] = make()
        return found

    def start_ledger(self) -> None:
        """Create the HTLC ledger once both sides agreed on the opening balances."""
        total_msat = self.funding_sat * 1000
        opener_msat = total_msat - self.push_msat
        local, remote = (opener_msat, self.push_msat) if self.local_is_opener else \
            (self.push_msat, opener_msat)
        self.ledger = HtlcLedger(local, remote, self.feerate_per_kw, self.local_is_opener)

    # --- commitments ------------------------------------------------------------------
    def spec(self, subject: Side, ctn: int) -> cm.CommitmentSpec:
        """The commitment of ``subject`` at commitment number ``ctn``."""
        holder, counter = (self.local, self.remote) if subject == Side.LOCAL else \
            (self.remote, self.local)
        ckeys = self.commitment_keys(subject, ctn)
        htlcs = tuple(cm.HtlcView(h.htlc_id, h.amount_msat, h.payment_hash, h.cltv_expiry,
                                  offered=(offerer == subject))
                      for offerer, h in self.ledger.htlcs(subject, ctn))
        return cm.CommitmentSpec(
            funding_outpoint=self.funding_outpoint, funding_sat=self.funding_sat,
            funding_cond=self.funding_cond, commitment_number=ctn,
            obscuring_factor=self.obscuring_factor,
            holder_is_opener=(subject == Side.LOCAL) == self.local_is_opener,
            to_local_msat=self.ledger.balance_msat(subject, subject, ctn),
            to_remote_msat=self.ledger.balance_msat(subject.other, subject, ctn),
            htlcs=htlcs, feerate_per_kw=self.ledger.feerate(subject, ctn),
            dust_limit_sat=holder.dust_limit_sat, to_self_delay=counter.to_self_delay,
            keys=ckeys)

    def build(self, subject: Side, ctn: int) -> tuple[cm.CommitmentSpec, cm.BuiltCommitment]:
        spec = self.spec(subject, ctn)
        return spec, cm.build_commitment(spec)

    def sign_remote(self, ctn: int) -> tuple[bytes, list[bytes]]:
        """Our signatures for the remote's commitment ``ctn`` and its HTLC transactions."""
        spec, built = self.build(Side.REMOTE, ctn)
        sig = built.tx.sign_input(0, self.secrets.funding_privkey, self.funding_sat,
                                  self.funding_cond)
        htlc_priv = bolt3_keys.derive_privkey(self.secrets.htlc_basepoint_secret,
                                              spec.keys.per_commitment_point)
        htlc_sigs = [tx.sign_input(0, htlc_priv, out.amount_sat, out.cond)
                     for tx, out in zip(cm.second_stage_txs(built, spec), built.htlc_outputs,
                                        strict=True)]
        return sig, htlc_sigs

    def check_local_sigs(self, ctn: int, sig: bytes, htlc_sigs: list[bytes]) -> None:
        """Verify the remote's signatures on our commitment ``ctn``; raise if bad."""
        spec, built = self.build(Side.LOCAL, ctn)
        msg = sighash(built.tx, 0, self.funding_sat, self.funding_cond)
        if not policy.verify(self.remote.basepoints.funding_pubkey, msg, sig):
            raise ProtocolViolation(f"bad commitment signature for our commitment {ctn}")
        second = cm.second_stage_txs(built, spec)
        if len(htlc_sigs) != len(second):
            raise ProtocolViolation(f"{len(htlc_sigs)} HTLC signatures for {len(second)} "
                                    "HTLC outputs")
        for i, (tx, out, hsig) in enumerate(zip(second, built.htlc_outputs, htlc_sigs,
                                                strict=True)):
            msg = sighash(tx, 0, out.amount_sat, out.cond)
            if not policy.verify(spec.keys.remote_htlc_pubkey, msg, hsig):
                raise ProtocolViolation(f"bad HTLC signature {i} for our commitment {ctn}")

    def accept_local_sigs(self, ctn: int, sig: bytes, htlc_sigs: list[bytes]) -> None:
        """Keep the remote's signatures on our new commitment (older ones for ``cheat``)."""
        if self.local_sigs is not None:
            added, dropped = self.old_sig_changes
            old_ctn, old_sig = self.local_sigs[0], self.local_sigs[1]
            self.old_sigs[old_ctn] = old_sig
            added.append((old_ctn, old_sig))
            for old in sorted(self.old_sigs)[:-KEEP_OLD_SIGS]:
                del self.old_sigs[old]
                dropped.append(old)
        self.local_sigs = (ctn, sig, list(htlc_sigs))

    def take_old_sig_changes(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        """The old signatures kept and forgotten since the last call (for the store)."""
        changes, self.old_sig_changes = self.old_sig_changes, ([], [])
        return changes

    def signed_local_commitment(self, ctn: int | None = None) -> Tx:
        """Our commitment ``ctn`` (default: the latest), fully signed for broadcast."""
        if ctn is None or ctn == self.local_sigs[0]:
            ctn, remote_sig, _ = self.local_sigs
        elif ctn in self.old_sigs:
            remote_sig = self.old_sigs[ctn]
        else:
            raise ChannelError(f"no signature of the peer's kept for our commitment {ctn}")
        _, built = self.build(Side.LOCAL, ctn)
        tx = built.tx
        ours = tx.sign_input(0, self.secrets.funding_privkey, self.funding_sat, self.funding_cond)
        tx.witnesses = [cm.funding_witness(self.local.basepoints.funding_pubkey, ours,
                                           self.remote.basepoints.funding_pubkey, remote_sig)]
        return tx

    def revoked_local(self, ctn: int | None) -> tuple[int, Tx]:
        """Dev/chaos: one of our revoked commitments, signed (broadcasting it is cheating)."""
        if not self.old_sigs:
            raise ChannelError("no revoked commitment of ours to broadcast yet")
        ctn = max(self.old_sigs) if ctn is None else ctn
        if ctn not in self.old_sigs:
            raise ChannelError(f"commitment {ctn} is not a kept revoked commitment; "
                               f"kept: {sorted(self.old_sigs)}")
        return ctn, self.signed_local_commitment(ctn)

    # --- HTLC updates (BOLT 2 checks) ------------------------------------------------------
    def check_can_add(self, amount_msat: int, cltv_expiry: int, height: int) -> None:
        """Refuse an HTLC we may not offer now, with the reason."""
        if self.state != ChannelState.OPEN:
            raise ChannelError(f"channel is {self.state.name}, not OPEN")
        if type(amount_msat) is not int or amount_msat <= 0:
            raise ChannelError(f"amount must be a positive int, got {amount_msat!r}")
        if amount_msat < self.remote.htlc_minimum_msat:
            raise ChannelError(f"amount {amount_msat} msat is below the peer's minimum "
                               f"{self.remote.htlc_minimum_msat} msat")
        if not height < cltv_expiry <= height + MAX_CLTV_DELTA + 500:
            raise ChannelError(f"cltv_expiry {cltv_expiry} is not sane at height {height}")
        self._check_limits(Side.LOCAL, amount_msat)

    def _check_limits(self, offerer: Side, amount_msat: int) -> None:
        receiver_params = self.remote if offerer == Side.LOCAL else self.local
        offerer_params = self.local if offerer == Side.LOCAL else self.remote
        subject = offerer.other  # the new HTLC appears first in the receiver's commitment
        ctn = self.ledger.ctn_latest(subject)
        pending = [h for side, h in self.ledger.htlcs_pending(subject) if side == offerer] \
            if hasattr(self.ledger, "htlcs_pending") else []
        offered = [h for side, h in self.ledger.htlcs(subject, ctn) if side == offerer] + pending
        if len(offered) + 1 > receiver_params.max_accepted_htlcs:
            raise ChannelError(f"would exceed max_accepted_htlcs "
                               f"{receiver_params.max_accepted_htlcs}")
        in_flight = sum(h.amount_msat for h in offered) + amount_msat
        if in_flight > receiver_params.max_htlc_value_in_flight_msat:
            raise ChannelError(f"would exceed max_htlc_value_in_flight_msat "
                               f"{receiver_params.max_htlc_value_in_flight_msat}")
        balance = self.ledger.balance_msat(offerer, subject, ctn) - sum(
            h.amount_msat for h in pending) - amount_msat
        fee_msat = 0
        opener = Side.LOCAL if self.local_is_opener else Side.REMOTE
        if offerer == opener:
            fee_msat = 1000 * cm.commitment_fee_sat(self.ledger.feerate(subject, ctn),
                                                    len(offered) + 1)
        reserve_msat = 1000 * receiver_params.channel_reserve_sat \
            if offerer_params is not None else 0
        if balance - fee_msat < reserve_msat:
            raise ChannelError(f"insufficient balance: {balance - fee_msat} msat left after "
                               f"this HTLC and fees, reserve is {reserve_msat} msat")

    def receive_add(self, body: dict[str, Any], height: int) -> Htlc:
        """Check and record the peer's update_add_htlc."""
        if self.state != ChannelState.OPEN:
            raise ProtocolViolation(f"update_add_htlc while {self.state.name}")
        amount = body["amount_msat"]
        if amount == 0 or amount < self.local.htlc_minimum_msat:
            raise ProtocolViolation(f"HTLC of {amount} msat is below our minimum "
                                    f"{self.local.htlc_minimum_msat}")
        if body["cltv_expiry"] >= 500_000_000:
            raise ProtocolViolation("cltv_expiry is a timestamp, not a height")
        try:
            self._check_limits(Side.REMOTE, amount)
        except ChannelError as exc:
            raise ProtocolViolation(str(exc)) from None
        htlc = Htlc(body["id"], amount, body["payment_hash"], body["cltv_expiry"],
                    body["onion_routing_packet"])
        try:
            self.ledger.recv_add(htlc)
        except HtlcLedgerError as exc:
            raise ProtocolViolation(str(exc)) from None
        return htlc

    def receive_fulfill(self, htlc_id: int, preimage: bytes) -> Htlc:
        """Check the preimage against the HTLC we offered; record the settle."""
        htlc = self.offered_htlc(htlc_id)
        if hashlib.sha256(preimage).digest() != htlc.payment_hash:
            raise ProtocolViolation(f"preimage does not match HTLC {htlc_id}'s payment hash")
        try:
            self.ledger.recv_settle(htlc_id)
        except HtlcLedgerError as exc:
            raise ProtocolViolation(str(exc)) from None
        self.preimages[htlc.payment_hash] = preimage
        return htlc

    def offered_htlc(self, htlc_id: int) -> Htlc:
        """An HTLC we offered, by id."""
        found = self.ledger.get_htlc(Side.LOCAL, htlc_id)
        if found is None:
            raise ProtocolViolation(f"unknown HTLC id {htlc_id}")
        return found
