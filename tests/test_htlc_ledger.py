"""The HTLC ledger: two ledgers (Alice opened, Bob accepted) wired together by hand."""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from emulator.errors import DecodeError
from peers.htlc_ledger import HtlcLedger
from peers.htlc_types import (
    CommitmentPending,
    FeeUpdateNotOpener,
    Htlc,
    HtlcAlreadyRemoved,
    HtlcLedgerError,
    HtlcNotLockedIn,
    InsufficientBalance,
    InvalidUpdate,
    NoPendingCommitment,
    NothingToSign,
    PendingUpdate,
    Side,
    UnexpectedHtlcId,
    UnknownCommitment,
    UnknownHtlc,
    UpdateKind,
)

LOCAL, REMOTE = Side.LOCAL, Side.REMOTE
ALICE_MSAT = 6_000_000
BOB_MSAT = 4_000_000
TOTAL_MSAT = ALICE_MSAT + BOB_MSAT
FEERATE_PER_KW = 2_500
NAMES = ("alice", "bob")


def payment_hash(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def mirrored(pairs: list[tuple[Side, Htlc]]) -> list[tuple[Side, Htlc]]:
    """The same HTLC list as the other ledger names the offerers."""
    return [(side.other, htlc) for side, htlc in pairs]


def view(ledger: HtlcLedger, subject: Side, ctn: int) -> tuple:
    """Everything about subject's commitment at ctn, with sides named absolutely."""
    return (ledger.htlcs(subject, ctn), ledger.balance_msat(LOCAL, subject, ctn),
            ledger.balance_msat(REMOTE, subject, ctn), ledger.feerate(subject, ctn))


def mirrored_view(ledger: HtlcLedger, subject: Side, ctn: int) -> tuple:
    """``view`` of the other ledger's ``subject.other``, renamed to this ledger's sides."""
    htlcs, theirs, ours, feerate = view(ledger, subject.other, ctn)
    return mirrored(htlcs), ours, theirs, feerate


def assert_conserved(ledger: HtlcLedger, ctns: dict[Side, range] | None = None) -> None:
    """local + remote + in flight = total, every balance >= 0, at every ctn asked."""
    for subject in Side:
        span = ctns[subject] if ctns else range(ledger.ctn_latest(subject) + 2)
        for ctn in span:
            balances = [ledger.balance_msat(whose, subject, ctn) for whose in Side]
            flight = ledger.in_flight(subject, ctn)
            assert min(balances) >= 0, (subject, ctn, balances)
            assert sum(balances) + flight["offered_msat"] + flight["received_msat"] \
                == TOTAL_MSAT, (subject, ctn)


def assert_views_agree(alice: HtlcLedger, bob: HtlcLedger, include_next: bool = True,
                       recent: int | None = None) -> None:
    """Alice's view of each commitment equals Bob's, at every ctn both know (or the recent)."""
    for subject in Side:
        latest = min(alice.ctn_latest(subject), bob.ctn_latest(subject.other))
        first = 0 if recent is None else max(0, latest - recent)
        for ctn in range(first, latest + (2 if include_next else 1)):
            assert view(alice, subject, ctn) == mirrored_view(bob, subject, ctn), (subject, ctn)


def new_pair() -> tuple[HtlcLedger, HtlcLedger]:
    return (HtlcLedger(ALICE_MSAT, BOB_MSAT, FEERATE_PER_KW, local_is_opener=True),
            HtlcLedger(BOB_MSAT, ALICE_MSAT, FEERATE_PER_KW, local_is_opener=False))


class Link:
    """Alice and Bob; every message is delivered at once, and both are checked after it."""

    def __init__(self) -> None:
        self.alice, self.bob = new_pair()
        self.count = 0

    def ends(self, sender: str) -> tuple[HtlcLedger, HtlcLedger]:
        return (self.alice, self.bob) if sender == "alice" else (self.bob, self.alice)

    def check(self) -> None:
        assert_conserved(self.alice)
        assert_conserved(self.bob)
        assert_views_agree(self.alice, self.bob)

    def add(self, sender: str, amount_msat: int) -> Htlc:
        ours, theirs = self.ends(sender)
        self.count += 1
        htlc = ours.send_add(amount_msat, payment_hash(self.count), 600 + self.count, b"onion")
        theirs.recv_add(htlc)
        self.check()
        return htlc

    def settle(self, sender: str, htlc_id: int) -> None:
        ours, theirs = self.ends(sender)
        ours.send_settle(htlc_id)
        theirs.recv_settle(htlc_id)
        self.check()

    def fail(self, sender: str, htlc_id: int) -> None:
        ours, theirs = self.ends(sender)
        ours.send_fail(htlc_id)
        theirs.recv_fail(htlc_id)
        self.check()

    def fee(self, sender: str, feerate_per_kw: int) -> None:
        ours, theirs = self.ends(sender)
        ours.send_fee(feerate_per_kw)
        theirs.recv_fee(feerate_per_kw)
        self.check()

    def commit(self, sender: str) -> int:
        ours, theirs = self.ends(sender)
        ctn = ours.send_commit()
        assert theirs.recv_commit() == ctn
        self.check()
        return ctn

    def revoke(self, sender: str) -> None:
        ours, theirs = self.ends(sender)
        ours.send_revoke()
        theirs.recv_revoke()
        self.check()

    def dance(self, sender: str) -> None:
        """Sender signs, the other revokes and signs back, sender revokes."""
        other = "bob" if sender == "alice" else "alice"
        self.commit(sender)
        self.revoke(other)
        self.commit(other)
        self.revoke(sender)


@pytest.fixture
def link() -> Link:
    return Link()


# --- the dance ---------------------------------------------------------------------------
def test_add_enters_bob_commitment_then_alice(link):
    alice, bob = link.alice, link.bob
    htlc = link.add("alice", 1_000_000)
    assert htlc.htlc_id == 0 and htlc.onion == b"onion"
    assert alice.htlcs(REMOTE) == [] and alice.htlcs(REMOTE, 1) == [(LOCAL, htlc)]
    assert alice.htlcs_pending(REMOTE) == [(LOCAL, htlc)] and alice.htlcs_pending(LOCAL) == []
    assert alice.has_changes_to_sign(REMOTE) and not alice.has_changes_to_sign(LOCAL)
    assert not bob.has_changes_to_sign(REMOTE)

    assert link.commit("alice") == 1
    assert bob.htlcs(LOCAL, 1) == [(REMOTE, htlc)] and bob.htlcs(LOCAL, 0) == []
    assert alice.htlcs(LOCAL) == [] and alice.awaiting_revoke()
    assert bob.ctn_latest(LOCAL) == 1 and bob.ctn_oldest_unrevoked(LOCAL) == 0

    link.revoke("bob")
    assert bob.ctn_oldest_unrevoked(LOCAL) == 1 and not alice.awaiting_revoke()
    assert alice.htlcs(LOCAL, 1) == [(LOCAL, htlc)] and alice.has_changes_to_sign(LOCAL)
    assert bob.has_changes_to_sign(REMOTE)

    assert link.commit("bob") == 1
    assert alice.htlcs(LOCAL, 1) == [(LOCAL, htlc)] and alice.htlcs(LOCAL, 0) == []
    assert bob.irrevocably_added(REMOTE) == []  # Alice has not revoked her commitment 0
    link.revoke("alice")
    assert bob.irrevocably_added(REMOTE) == [0] and alice.irrevocably_added(LOCAL) == [0]
    assert alice.unacked_local_updates() == []
    for ledger, ours in ((alice, ALICE_MSAT - 1_000_000), (bob, BOB_MSAT)):
        assert ledger.balance_msat(LOCAL, LOCAL) == ours
    assert alice.in_flight(LOCAL) == {"offered_msat": 1_000_000, "received_msat": 0}
    assert bob.in_flight(LOCAL) == {"offered_msat": 0, "received_msat": 1_000_000}


def locked_in(link: Link, sender: str, amount_msat: int) -> Htlc:
    htlc = link.add(sender, amount_msat)
    link.dance(sender)
    return htlc


def test_settle_pays_the_receiver_at_the_right_ctns(link):
    alice, bob = link.alice, link.bob
    htlc = locked_in(link, "alice", 1_500_000)
    link.settle("bob", htlc.htlc_id)
    assert bob.htlcs(REMOTE, 2) == [] and bob.htlcs(REMOTE, 1) == [(REMOTE, htlc)]
    link.commit("bob")  # Alice's commitment 2 no longer has it
    assert alice.htlcs(LOCAL, 2) == [] and alice.balance_msat(REMOTE, LOCAL, 2) == BOB_MSAT + 1_500_000
    assert bob.htlcs(LOCAL, 1) == [(REMOTE, htlc)]  # Bob's own is not updated yet
    link.revoke("alice")
    link.commit("alice")
    link.revoke("bob")
    for ledger, ours, theirs in ((alice, ALICE_MSAT - 1_500_000, BOB_MSAT + 1_500_000),
                                 (bob, BOB_MSAT + 1_500_000, ALICE_MSAT - 1_500_000)):
        for subject in Side:
            assert ledger.htlcs(subject) == [] and ledger.balance_msat(LOCAL, subject) == ours
            assert ledger.balance_msat(REMOTE, subject) == theirs
            assert ledger.htlcs(subject, 1) != []  # history survives, for revoked commitments
            assert ledger.balance_msat(LOCAL, subject, 0) in (ALICE_MSAT, BOB_MSAT)
    archived = alice.get_htlc(LOCAL, 0)  # archived HTLCs drop their onion (not needed)
    assert archived.onion == b"" and replace(archived, onion=htlc.onion) == htlc
    assert alice.get_htlc(LOCAL, 1) is None


def test_fail_returns_the_amount_to_the_offerer(link):
    htlc = locked_in(link, "bob", 700_000)
    assert link.bob.balance_msat(LOCAL, LOCAL) == BOB_MSAT - 700_000
    link.fail("alice", htlc.htlc_id)
    link.dance("alice")
    for ledger, ours in ((link.alice, ALICE_MSAT), (link.bob, BOB_MSAT)):
        for subject in Side:
            assert ledger.htlcs(subject) == [] and ledger.balance_msat(LOCAL, subject) == ours
            assert ledger.in_flight(subject) == {"offered_msat": 0, "received_msat": 0}


def test_several_adds_under_one_commitment_signed(link):
    htlcs = [link.add("alice", amount) for amount in (100_000, 200_000, 300_000)]
    assert [h.htlc_id for h in htlcs] == [0, 1, 2]
    assert link.alice.unacked_local_updates() == [
        PendingUpdate(UpdateKind.ADD, 1, htlc_id=h.htlc_id, htlc=h) for h in htlcs]
    assert link.commit("alice") == 1
    assert link.bob.htlcs(LOCAL, 1) == [(REMOTE, h) for h in htlcs]
    late = link.add("alice", 400_000)  # after the signature: Bob's revocation does not ack it
    link.revoke("bob")
    assert link.alice.unacked_local_updates() == [
        PendingUpdate(UpdateKind.ADD, 2, htlc_id=3, htlc=late)]
    assert link.commit("bob") == 1
    assert link.alice.htlcs(LOCAL, 1) == [(LOCAL, h) for h in htlcs]
    link.revoke("alice")
    assert link.bob.irrevocably_added(REMOTE) == [0, 1, 2]
    link.dance("alice")
    assert link.bob.irrevocably_added(REMOTE) == [0, 1, 2, 3]


def test_interleaved_updates_from_both_sides(link):
    alice, bob = link.alice, link.bob
    a0 = link.add("alice", 1_000_000)
    b0 = link.add("bob", 400_000)
    assert link.commit("alice") == 1  # Bob's 1: Alice's add only, she has not acked Bob's
    assert bob.htlcs(LOCAL, 1) == [(REMOTE, a0)]
    link.revoke("bob")
    assert link.commit("bob") == 1  # Alice's 1: Bob's add and Alice's (acked by Bob)
    assert alice.htlcs(LOCAL, 1) == [(LOCAL, a0), (REMOTE, b0)]
    link.revoke("alice")  # acks Bob's add: it goes into Bob's next commitment
    assert alice.has_changes_to_sign(REMOTE) and not bob.has_changes_to_sign(REMOTE)
    assert link.commit("alice") == 2
    assert bob.htlcs(LOCAL, 2) == [(LOCAL, b0), (REMOTE, a0)]
    link.revoke("bob")
    assert alice.irrevocably_added(REMOTE) == [0] and bob.irrevocably_added(REMOTE) == [0]
    # both settle at once, then both sign before either revokes
    link.settle("alice", b0.htlc_id)
    link.settle("bob", a0.htlc_id)
    link.commit("alice")
    link.commit("bob")
    link.revoke("alice")
    link.revoke("bob")
    link.dance("alice")
    for ledger in (alice, bob):
        assert ledger.htlcs(LOCAL) == [] and ledger.htlcs(REMOTE) == []
    assert alice.balance_msat(LOCAL, LOCAL) == ALICE_MSAT - 1_000_000 + 400_000


def test_fee_update_locks_in_like_any_update(link):
    alice, bob = link.alice, link.bob
    link.fee("alice", 3_000)
    link.fee("alice", 5_000)  # two before one signature: the last one counts
    assert alice.feerate(REMOTE) == FEERATE_PER_KW and alice.feerate(REMOTE, 1) == 5_000
    assert alice.has_changes_to_sign(REMOTE)  # BOLT 2: may sign a fee-only change
    assert [u.feerate_per_kw for u in alice.unacked_local_updates()] == [3_000, 5_000]
    link.commit("alice")
    assert bob.feerate(LOCAL, 1) == 5_000 and bob.feerate(LOCAL, 0) == FEERATE_PER_KW
    assert alice.feerate(LOCAL) == FEERATE_PER_KW
    link.revoke("bob")
    link.commit("bob")
    assert alice.feerate(LOCAL, 1) == 5_000 and alice.feerate(LOCAL, 0) == FEERATE_PER_KW
    link.revoke("alice")
    link.fee("alice", 7_000)
    link.dance("alice")
    assert [bob.feerate(LOCAL, ctn) for ctn in range(3)] == [FEERATE_PER_KW, 5_000, 7_000]


def test_views_and_history_over_many_rounds(link):
    snapshots = {}
    for n in range(1, 13):
        sender, receiver = ("alice", "bob") if n % 2 else ("bob", "alice")
        htlc = link.add(sender, 10_000 * n)
        link.dance(sender)
        (link.settle if n % 3 else link.fail)(receiver, htlc.htlc_id)
        if n % 4 == 0:
            link.fee("alice", 1_000 + n)
        link.dance(receiver)
        for subject in Side:
            ctn = link.alice.ctn_latest(subject)
            snapshots[subject, ctn] = view(link.alice, subject, ctn)
    for (subject, ctn), seen in snapshots.items():  # revoked states are still rebuilt
        assert view(link.alice, subject, ctn) == seen
        assert mirrored_view(link.bob, subject, ctn) == seen
    assert link.alice.htlcs(LOCAL) == [] and link.alice.feerate(LOCAL) == 1_012


# --- persistence and reconnection ---------------------------------------------------------
def through_msgpack(ledger: HtlcLedger) -> HtlcLedger:
    wire = msgpack.unpackb(msgpack.packb(ledger.to_wire()))
    restored = HtlcLedger.from_wire(wire)
    assert restored.to_wire() == ledger.to_wire()
    return restored


def test_wire_round_trip_mid_dance(link):
    locked_in(link, "alice", 900_000)
    link.settle("bob", 0)
    link.add("alice", 100_000)
    link.add("bob", 50_000)
    link.fee("alice", 4_000)
    link.commit("alice")  # Bob owes a revocation; Alice awaits it
    link.alice, link.bob = through_msgpack(link.alice), through_msgpack(link.bob)
    assert link.alice.awaiting_revoke()
    link.check()
    link.revoke("bob")
    link.commit("bob")
    link.alice = through_msgpack(link.alice)
    link.revoke("alice")  # acks Bob's settle and add: Alice signs them for Bob
    assert not link.bob.has_changes_to_sign(REMOTE)
    link.commit("alice")
    link.revoke("bob")
    link.alice, link.bob = through_msgpack(link.alice), through_msgpack(link.bob)
    assert link.alice.feerate(LOCAL) == 4_000 and link.bob.feerate(LOCAL, 2) == 4_000
    assert link.alice.balance_msat(LOCAL, LOCAL, 1) == ALICE_MSAT - 900_000  # from the archive
    assert link.alice.irrevocably_added(REMOTE) == [0]
    link.settle("alice", 0)
    link.dance("alice")


def test_from_wire_rejects_garbage(link):
    wire = link.alice.to_wire()
    with pytest.raises(DecodeError):
        HtlcLedger.from_wire({**wire, "version": 99})
    with pytest.raises(DecodeError):
        HtlcLedger.from_wire({**wire, "ctn_oldest": [0]})
    with pytest.raises(DecodeError):
        HtlcLedger.from_wire({})


def test_reconnect_retransmits_what_the_remote_forgot(link):
    alice, bob = link.alice, link.bob
    signed = link.add("alice", 200_000)
    alice.send_commit()  # lost on the way
    unsigned = alice.send_add(300_000, payment_hash(99), 700)  # lost too
    bob.discard_unsigned_updates(REMOTE)  # BOLT 2: reverse uncommitted updates
    assert bob.htlcs(LOCAL, 1) == [] and bob.get_htlc(REMOTE, 0) is None
    assert alice.unacked_local_updates() == [
        PendingUpdate(UpdateKind.ADD, 1, htlc_id=0, htlc=signed),
        PendingUpdate(UpdateKind.ADD, 2, htlc_id=1, htlc=unsigned)]
    for update in alice.unacked_local_updates():
        if update.remote_ctn == alice.ctn_latest(REMOTE):
            bob.recv_add(update.htlc)
    assert bob.recv_commit() == 1
    assert_views_agree(alice, bob, include_next=False)  # Alice still has the unsigned add
    alice.discard_unsigned_updates(LOCAL)  # or drop the unsigned one instead of resending
    assert alice.get_htlc(LOCAL, 1) is None and alice.unacked_local_updates()[1:] == []
    link.check()
    link.revoke("bob")
    link.commit("bob")
    link.revoke("alice")
    assert link.add("alice", 300_000).htlc_id == 1


def test_reconnect_forgets_an_unsigned_fee_update(link):
    link.fee("alice", 9_000)
    link.bob.discard_unsigned_updates(REMOTE)
    assert link.bob.feerate(LOCAL, 1) == FEERATE_PER_KW and not link.bob.has_changes_to_sign(LOCAL)
    assert link.alice.unacked_local_updates() == [PendingUpdate(UpdateKind.FEE, 1,
                                                                feerate_per_kw=9_000)]
    link.alice.discard_unsigned_updates(LOCAL)
    assert link.alice.feerate(REMOTE, 1) == FEERATE_PER_KW
    assert not link.alice.has_changes_to_sign(REMOTE)
    link.check()
    link.fee("alice", 8_000)
    link.dance("alice")
    assert link.bob.feerate(LOCAL) == link.alice.feerate(LOCAL) == 8_000


# --- errors ------------------------------------------------------------------------------
def test_add_ids_must_be_exactly_next(link):
    with pytest.raises(UnexpectedHtlcId):
        link.bob.recv_add(Htlc(1, 1_000, payment_hash(1), 600))
    htlc = link.add("alice", 1_000)
    with pytest.raises(UnexpectedHtlcId):  # a duplicate
        link.bob.recv_add(htlc)
    link.check()


def test_invalid_updates_and_balance(link):
    with pytest.raises(InvalidUpdate):
        link.alice.send_add(0, payment_hash(1), 600)
    with pytest.raises(InvalidUpdate):
        link.alice.send_add(1_000, b"short", 600)
    with pytest.raises(InvalidUpdate):
        link.alice.send_fee(0)
    with pytest.raises(InsufficientBalance):
        link.bob.send_add(BOB_MSAT + 1, payment_hash(1), 600)
    link.add("bob", BOB_MSAT)  # everything Bob has
    with pytest.raises(InsufficientBalance):
        link.bob.send_add(1, payment_hash(2), 600)
    with pytest.raises(InvalidUpdate):
        HtlcLedger(-1, 0, FEERATE_PER_KW, True)


def test_settle_and_fail_rules(link):
    alice, bob = link.alice, link.bob
    with pytest.raises(UnknownHtlc):
        bob.send_settle(7)
    with pytest.raises(UnknownHtlc):
        bob.recv_settle(0)  # Bob never offered anything
    htlc = link.add("alice", 10_000)
    steps = [lambda: link.commit("alice"), lambda: link.revoke("bob"),
             lambda: link.commit("bob"), lambda: link.revoke("alice")]
    for step in steps:  # not before it is irrevocably committed on both sides
        with pytest.raises(HtlcNotLockedIn):
            bob.send_settle(htlc.htlc_id)
        with pytest.raises(HtlcNotLockedIn):
            alice.recv_fail(htlc.htlc_id)
        step()
    with pytest.raises(UnknownHtlc):
        alice.send_settle(htlc.htlc_id)  # Alice cannot settle her own offer
    link.fail("bob", htlc.htlc_id)
    with pytest.raises(HtlcAlreadyRemoved):
        bob.send_fail(htlc.htlc_id)
    with pytest.raises(HtlcAlreadyRemoved):
        bob.send_settle(htlc.htlc_id)
    link.dance("bob")
    with pytest.raises(HtlcAlreadyRemoved):  # and after it is gone for good
        alice.recv_fail(htlc.htlc_id)


def test_only_the_opener_updates_the_fee(link):
    with pytest.raises(FeeUpdateNotOpener):
        link.bob.send_fee(3_000)
    with pytest.raises(FeeUpdateNotOpener):
        link.alice.recv_fee(3_000)


def test_commitment_rules(link):
    alice, bob = link.alice, link.bob
    for call in (alice.send_commit, bob.recv_commit, alice.recv_commit):
        with pytest.raises(NothingToSign):
            call()
    for call in (alice.send_revoke, alice.recv_revoke, bob.send_revoke):
        with pytest.raises(NoPendingCommitment):
            call()
    link.add("alice", 5_000)
    link.commit("alice")
    link.add("alice", 6_000)
    with pytest.raises(CommitmentPending):
        alice.send_commit()  # the previous one is not revoked yet
    with pytest.raises(CommitmentPending):
        bob.recv_commit()
    link.revoke("bob")
    with pytest.raises(NoPendingCommitment):
        alice.recv_revoke()
    link.commit("alice")
    link.revoke("bob")
    link.commit("bob")
    link.revoke("alice")
    with pytest.raises(NothingToSign):
        alice.send_commit()
    with pytest.raises(UnknownCommitment):
        alice.htlcs(REMOTE, 5)
    with pytest.raises(UnknownCommitment):
        alice.balance_msat(LOCAL, LOCAL, -1)


def test_errors_are_typed_with_codes():
    errors = [UnexpectedHtlcId, InvalidUpdate, InsufficientBalance, UnknownHtlc,
              HtlcNotLockedIn, HtlcAlreadyRemoved, FeeUpdateNotOpener, NothingToSign,
              CommitmentPending, NoPendingCommitment, UnknownCommitment]
    assert HtlcLedgerError.code == "htlc_ledger"
    assert all(issubclass(e, HtlcLedgerError) for e in errors)
    assert len({e.code for e in errors}) == len(errors)


def test_side():
    assert LOCAL.other is REMOTE and REMOTE.other is LOCAL and str(LOCAL) == "local"


# --- random interleavings ------------------------------------------------------------------
class TwoLedgers(RuleBasedStateMachine):
    """Alice and Bob with a FIFO link each way: updates, signatures, revocations, delivery,
    restarts from the wire and reconnections, in any legal order."""

    def __init__(self) -> None:
        super().__init__()
        alice, bob = new_pair()
        self.ledgers = {"alice": alice, "bob": bob}
        self.queues: dict[str, deque] = {name: deque() for name in NAMES}  # sent by name
        self.sent: dict[str, list[str]] = {name: [] for name in NAMES}  # commit/revoke order
        self.signed: dict[tuple[str, int], tuple] = {}  # (holder, ctn) -> what was signed
        self.stored: dict[str, dict] = {name: {} for name in NAMES}  # HTLC records on 'disk'
        self.count = self.steps = 0

    def persist(self, name: str) -> None:
        """Write what changed since the last write, as the channel manager does."""
        changed, dropped = self.ledgers[name].take_changes()
        stored = self.stored[name]
        stored.update(((obj["offerer"], obj["htlc"]["htlc_id"]), obj) for obj in changed)
        for key in dropped:
            stored.pop(tuple(key), None)

    def reload(self, name: str) -> HtlcLedger:
        """The ledger as a restart finds it: its header plus the stored HTLC records."""
        self.persist(name)
        record = {**self.ledgers[name].header_to_wire(),
                  "htlcs": list(self.stored[name].values())}
        return HtlcLedger.from_wire(msgpack.unpackb(msgpack.packb(record), raw=False))

    def ends(self, name: str) -> tuple[HtlcLedger, HtlcLedger]:
        return self.ledgers[name], self.ledgers[peer_of(name)]

    def who(self, can) -> list[str]:
        """The names whose ledger passes ``can``."""
        return [name for name in NAMES if can(self, name)]

    def can_add(self, name: str) -> bool:
        ours = self.ledgers[name]
        return ours.balance_msat(LOCAL, REMOTE, ours.ctn_latest(REMOTE) + 1) > 0

    def can_remove(self, name: str) -> bool:
        return bool(self.ledgers[name].irrevocably_added(REMOTE))

    def can_commit(self, name: str) -> bool:
        ours = self.ledgers[name]
        return not ours.awaiting_revoke() and ours.has_changes_to_sign(REMOTE)

    def can_revoke(self, name: str) -> bool:
        ours = self.ledgers[name]
        return ours.ctn_latest(LOCAL) > ours.ctn_oldest_unrevoked(LOCAL)

    def can_deliver(self, name: str) -> bool:
        return bool(self.queues[name])

    @precondition(lambda self: self.who(TwoLedgers.can_add))
    @rule(data=st.data(), amount_msat=st.integers(1, 2_500_000))
    def add(self, data, amount_msat):
        ours = self.ledgers[data.draw(st.sampled_from(self.who(TwoLedgers.can_add)))]
        available_msat = ours.balance_msat(LOCAL, REMOTE, ours.ctn_latest(REMOTE) + 1)
        self.count += 1
        htlc = ours.send_add(min(amount_msat, available_msat), payment_hash(self.count),
                             500 + self.count)
        self.queues[self.name_of(ours)].append(("recv_add", htlc))

    @precondition(lambda self: self.who(TwoLedgers.can_remove))
    @rule(data=st.data(), settle=st.booleans())
    def remove(self, data, settle):
        name = data.draw(st.sampled_from(self.who(TwoLedgers.can_remove)))
        htlc_id = data.draw(st.sampled_from(self.ledgers[name].irrevocably_added(REMOTE)))
        (self.ledgers[name].send_settle if settle else self.ledgers[name].send_fail)(htlc_id)
        self.queues[name].append(("recv_settle" if settle else "recv_fail", htlc_id))

    def fee(self, feerate_per_kw: int) -> None:
        self.ledgers["alice"].send_fee(feerate_per_kw)
        self.queues["alice"].append(("recv_fee", feerate_per_kw))

    @precondition(lambda self: self.who(TwoLedgers.can_commit))
    @rule(data=st.data())
    def commit(self, data):
        self.send_commit(data.draw(st.sampled_from(self.who(TwoLedgers.can_commit))))

    def send_commit(self, name: str) -> None:
        ours = self.ledgers[name]
        ctn = ours.send_commit()
        self.signed[peer_of(name), ctn] = view(ours, REMOTE, ctn)
        self.queues[name].append(("recv_commit", ctn))
        self.sent[name].append("commit")

    @precondition(lambda self: self.who(TwoLedgers.can_revoke))
    @rule(data=st.data())
    def revoke(self, data):
        self.send_revoke(data.draw(st.sampled_from(self.who(TwoLedgers.can_revoke))))

    def send_revoke(self, name: str) -> None:
        self.ledgers[name].send_revoke()
        self.queues[name].append(("recv_revoke",))
        self.sent[name].append("revoke")

    @precondition(lambda self: self.who(TwoLedgers.can_deliver))
    @rule(data=st.data(), how_many=st.integers(1, 4))
    def deliver(self, data, how_many):
        name = data.draw(st.sampled_from(self.who(TwoLedgers.can_deliver)))
        for _ in range(min(how_many, len(self.queues[name]))):
            self.deliver_one(name)

    def deliver_one(self, name: str) -> None:
        _, theirs = self.ends(name)
        method, *args = self.queues[name].popleft()
        if method == "recv_commit":  # the wire carries no ctn: check the count
            ctn = theirs.recv_commit()
            assert ctn == args[0]
            assert mirrored_view(theirs, REMOTE, ctn) == self.signed[peer_of(name), ctn]
        else:
            getattr(theirs, method)(*args)  # a legal message never raises

    @rule()
    def settle_down(self):
        """Both behave like eager nodes until nothing is left to send or deliver."""
        while True:
            name = next((n for n in NAMES if self.queues[n]), None)
            if name is not None:
                self.deliver_one(name)
            elif revoker := next(iter(self.who(TwoLedgers.can_revoke)), None):
                self.send_revoke(revoker)
            elif signer := next(iter(self.who(TwoLedgers.can_commit)), None):
                self.send_commit(signer)
            else:
                return

    @rule(what=st.sampled_from(["fee", "restart", "reconnect"]), name=st.sampled_from(NAMES),
          number=st.integers(253, 20_000), flag=st.booleans())
    def disturb(self, what, name, number, flag):
        """A fee change, a restart from the wire or a reconnection: rarer than the rest."""
        if what == "fee":
            self.fee(number)
        elif what == "restart":
            self.ledgers[name] = self.reload(name)
        else:
            self.reconnect(resend_unsigned=flag)

    def reconnect(self, resend_unsigned: bool) -> None:
        lost = {name: list(self.queues[name]) for name in NAMES}
        for name in NAMES:
            self.queues[name].clear()
            self.ledgers[name].discard_unsigned_updates(REMOTE)
        for name in NAMES:
            self.queues[name].extend(self.retransmission(name, lost[name], resend_unsigned))

    def name_of(self, ledger: HtlcLedger) -> str:
        return next(name for name in NAMES if self.ledgers[name] is ledger)

    def retransmission(self, name: str, lost: list, resend_unsigned: bool) -> list:
        """What ``name`` sends again after channel_reestablish, from the ledgers' numbers."""
        ours, theirs = self.ends(name)
        commit_lost = ours.ctn_latest(REMOTE) > theirs.ctn_latest(LOCAL)
        revoke_lost = ours.ctn_oldest_unrevoked(LOCAL) > theirs.ctn_oldest_unrevoked(REMOTE)
        assert commit_lost == any(m[0] == "recv_commit" for m in lost)
        assert revoke_lost == any(m[0] == "recv_revoke" for m in lost)
        forgotten = [u for u in ours.unacked_local_updates()
                     if u.remote_ctn > theirs.ctn_latest(LOCAL)]
        signed = [u for u in forgotten if u.remote_ctn <= ours.ctn_latest(REMOTE)]
        unsigned = [u for u in forgotten if u.remote_ctn > ours.ctn_latest(REMOTE)]
        if not resend_unsigned:
            ours.discard_unsigned_updates(LOCAL)
            unsigned = []
        messages = [as_message(u) for u in signed]
        if commit_lost:
            messages.append(("recv_commit", ours.ctn_latest(REMOTE)))
        if revoke_lost:  # BOLT 2: in the order they were first sent
            if commit_lost and self.sent[name][-2:] == ["revoke", "commit"]:
                messages.insert(0, ("recv_revoke",))
            else:
                messages.append(("recv_revoke",))
        return messages + [as_message(u) for u in unsigned]

    @invariant()
    def consistent(self):
        alice, bob = self.ledgers["alice"], self.ledgers["bob"]
        for ledger in (alice, bob):  # recent ctns; older ones are checked against self.signed
            assert_conserved(ledger, {s: range(max(0, ledger.ctn_oldest_unrevoked(s) - 1),
                                               ledger.ctn_latest(s) + 2) for s in Side})
        # the next commitments agree too once nothing is in flight
        assert_views_agree(alice, bob, include_next=not any(self.queues.values()), recent=2)

    @invariant()
    def pending_is_next_minus_latest(self):
        """htlcs_pending (one pass) is what the next commitment adds to the latest."""
        for ledger in self.ledgers.values():
            for s in Side:
                latest = ledger.htlcs(s, ledger.ctn_latest(s))
                expected = [p for p in ledger.htlcs(s, ledger.ctn_latest(s) + 1)
                            if p not in latest]
                assert ledger.htlcs_pending(s) == expected

    @invariant()
    def remembered_answers_are_current(self):
        """What the ledger remembers of signed commitments is what it would work out now."""
        def answers(ledger: HtlcLedger) -> list:
            return [(ledger.htlcs(s, ctn), ledger.balance_msat(LOCAL, s, ctn),
                     ledger.balance_msat(REMOTE, s, ctn)) for s in Side
                    for ctn in range(ledger.ctn_floor(s), ledger.ctn_latest(s) + 2)]
        for ledger in self.ledgers.values():
            remembered = answers(ledger)  # partly from earlier steps
            ledger._memo.clear()
            assert answers(ledger) == remembered

    @invariant()
    def persisted_incrementally(self):
        """The header plus the records written change by change rebuild the ledger."""
        for name in NAMES:
            full = self.ledgers[name].to_wire()
            rebuilt = self.reload(name).to_wire()
            key = lambda obj: (obj["offerer"], obj["htlc"]["htlc_id"])  # noqa: E731
            assert {key(o): o for o in rebuilt.pop("htlcs")} == \
                {key(o): o for o in full.pop("htlcs")}
            assert rebuilt == full

    @invariant()
    def history_kept(self):
        """Signed commitments never change, revoked ones included (a few each step)."""
        self.steps += 1
        for (holder, ctn), signed in list(self.signed.items())[self.steps % 5::5]:
            holder_ledger, signer = self.ends(holder)
            if ctn < signer.ctn_floor(REMOTE):
                continue  # pruned: too old to be asked about
            assert view(signer, REMOTE, ctn) == signed
            if ctn <= holder_ledger.ctn_latest(LOCAL):
                assert mirrored_view(holder_ledger, REMOTE, ctn) == signed


def peer_of(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def as_message(update: PendingUpdate) -> tuple:
    """The ``recv_*`` call that a retransmitted update becomes at the other end."""
    if update.kind is UpdateKind.ADD:
        return ("recv_add", update.htlc)
    if update.kind is UpdateKind.FEE:
        return ("recv_fee", update.feerate_per_kw)
    return ("recv_settle" if update.kind is UpdateKind.SETTLE else "recv_fail", update.htlc_id)


TwoLedgers.TestCase.settings = settings(max_examples=150, stateful_step_count=80,
                                        deadline=None, report_multiple_bugs=False,
                                        suppress_health_check=[HealthCheck.too_slow])
# ~5 s when it passes; shrinking a failing interleaving can take minutes: let it finish.
test_random_interleavings = pytest.mark.timeout(600)(TwoLedgers.TestCase)


def test_history_is_pruned_so_the_ledger_stays_small():
    """A long-lived channel's record does not grow with every payment it ever made."""
    alice, bob = HtlcLedger(10**9, 0, 253, True), HtlcLedger(0, 10**9, 253, False)

    def dance(proposer, acceptor):
        proposer.send_commit()
        acceptor.recv_commit()
        acceptor.send_revoke()
        proposer.recv_revoke()
        acceptor.send_commit()
        proposer.recv_commit()
        proposer.send_revoke()
        acceptor.recv_revoke()

    sizes = []
    for i in range(400):
        htlc = alice.send_add(1000, hashlib.sha256(bytes([i % 256, i // 256])).digest(), 500)
        bob.recv_add(htlc)
        dance(alice, bob)
        bob.send_settle(htlc.htlc_id)
        alice.recv_settle(htlc.htlc_id)
        dance(bob, alice)
        sizes.append(len(msgpack.packb(alice.to_wire(), use_bin_type=True)))
    assert sizes[-1] < 2 * sizes[150]  # bounded, not linear in the number of payments
    assert alice.balance_msat(REMOTE, LOCAL) == bob.balance_msat(LOCAL, LOCAL) == 400_000
    assert alice.ctn_floor(LOCAL) > 0
    with pytest.raises(HtlcAlreadyRemoved):  # pruned, but still known as settled
        alice.recv_settle(0)
    with pytest.raises(UnknownCommitment):
        alice.htlcs(LOCAL, 0)
    restored = HtlcLedger.from_wire(msgpack.unpackb(msgpack.packb(
        alice.to_wire(), use_bin_type=True), raw=False))
    assert restored.balance_msat(REMOTE, LOCAL) == 400_000
    oldest_kept = restored.ctn_floor(LOCAL)
    assert restored.balance_msat(REMOTE, LOCAL, oldest_kept) == alice.balance_msat(
        REMOTE, LOCAL, oldest_kept)
