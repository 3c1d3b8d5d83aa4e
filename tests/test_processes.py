"""Chain and peer processes over ZeroMQ: payments, bad input, sessions, reconnects."""
from __future__ import annotations

import pytest
import zmq

from emulator import envelope, transport
from emulator.network import PeerPlan
from emulator.rpc import RpcError
from emulator.waiting import wait_for

pytestmark = pytest.mark.process

TRIO = [PeerPlan("alice", 1_000_000, ("bob", "carol")), PeerPlan("bob", 500_000, ("carol",)),
        PeerPlan("carol", 0)]


def test_on_chain_payment_confirms_and_supply_holds(network_factory):
    net = network_factory(TRIO)
    net.wait_connected()
    sent = net.rpc("alice").call("sendonchain", address=net.wallet_key("carol"),
                                 amount_sat=123_456)
    net.chain.call("mine", n=1)
    wait_for(lambda: net.rpc("carol").call("walletbalance")["confirmed_sat"] == 123_456,
             what="carol sees the payment")
    net.wait_synced()
    balances = net.balances()
    assert balances["alice"] == 1_000_000 - 123_456 - sent["fee_sat"]
    miner = sum(c["amount_sat"] for c in net.chain.call("listunspent", pubkey=net.miner_key))
    assert sum(balances.values()) + miner == net.supply_sat == 1_500_000
    assert net.chain.call("verify")["ok"]
    assert net.chain.call("gettx", txid=sent["txid"])["confirmations"] >= 1


def test_peers_report_their_seed_derived_ids(network_factory):
    net = network_factory(TRIO[:2])
    info = net.rpc("alice").call("getinfo")
    assert info["id"] == net.node_id("alice")
    assert info["confirmed_sat"] == 1_000_000


def _stranger(net, name: str) -> zmq.Socket:
    ctx = zmq.Context.instance()
    return transport.dealer(ctx, net.endpoint(name, "p2p"), identity=b"\x02" + b"\x99" * 32,
                            immediate=False)


@pytest.mark.parametrize("payload", [
    b"not msgpack at all \xc1",
    envelope.pack("pong", {"ignored": b""})[:-3],
    b"\x81\xa4type\xa7nothing",
    b"\x00" * (envelope.P2P_MAX_BYTES + 10),
])
def test_malformed_p2p_message_gets_an_error_and_the_peer_lives_on(network_factory, payload):
    net = network_factory(TRIO[:1])
    sock = _stranger(net, "alice")
    try:
        sock.send(payload)
        assert sock.poll(10_000), "no error came back"
        reply = envelope.unpack(sock.recv())
        assert reply.type == "error"
        assert reply.body["data"]
    finally:
        sock.close(linger=0)
    assert net.rpc("alice").call("getinfo")["alias"] == "alice"


def test_message_before_init_is_answered_with_disconnect(network_factory):
    net = network_factory(TRIO[:1])
    sock = _stranger(net, "alice")
    try:
        sock.send(envelope.pack("ping", {"num_pong_bytes": 1}, sender=b"\x02" + b"\x99" * 32,
                                session=b"x" * 16, seq=1))
        assert sock.poll(10_000)
        reply = envelope.unpack(sock.recv())
        assert reply.type == "disconnect" and "before init" in reply.body["reason"]
    finally:
        sock.close(linger=0)
    assert net.rpc("alice").call("getinfo")


@pytest.mark.parametrize("fault", ["gap", "duplicate", "stale_session"])
def test_session_violation_ends_the_session_and_peers_reconnect(network_factory, fault):
    net = network_factory([PeerPlan("alice", 0, ("bob",)), PeerPlan("bob", 0)])
    net.wait_connected()
    net.rpc("alice").call("dev_linkfault", node_id=net.node_id("bob"), kind=fault)

    def bob_saw_violation():
        return [e for e in net.sup.collector.events(kind="disconnected", proc="peer bob")
                if e["data"]["code"] == fault]
    wait_for(bob_saw_violation, 10, what=f"bob ends the session on a {fault}")
    wait_for(lambda: len(net.sup.collector.events(kind="connected", proc="peer alice")) >= 2,
             10, what="alice reconnects")
    net.wait_connected()


def test_bad_control_requests_get_typed_errors(network_factory):
    net = network_factory(TRIO[:1])
    alice = net.rpc("alice")
    with pytest.raises(RpcError) as info:
        alice.call("no_such_verb")
    assert info.value.code == "bad_request"
    with pytest.raises(RpcError) as info:
        alice.call("sendonchain", bogus_arg=1)
    assert info.value.code == "bad_request"
    with pytest.raises(RpcError) as info:
        alice.call("sendonchain", address="zz", amount_sat=1000)
    assert info.value.code == "bad_request"
    with pytest.raises(RpcError) as info:
        alice.call("sendonchain", address=net.wallet_key("alice").hex(), amount_sat=10**15)
    assert info.value.code == "insufficient_funds"
    # raw garbage on the control socket gets an error reply too
    sock = transport.dealer(zmq.Context.instance(), net.endpoint("alice", "ctl"), immediate=False)
    try:
        sock.send(b"\xc1garbage")
        assert sock.poll(10_000)
        body = envelope.unpack_control(sock.recv(), "reply")
        assert body["ok"] is False and body["error"]["code"] == "malformed"
    finally:
        sock.close(linger=0)
    assert alice.call("getinfo")["alias"] == "alice"


def test_chain_rejects_malformed_and_unfunded_transactions(network_factory):
    net = network_factory(TRIO[:1])
    with pytest.raises(RpcError) as info:
        net.chain.call("submittx", tx={"version": 2})
    assert info.value.code == "tx_rejected" and "malformed" in str(info.value)
    with pytest.raises(RpcError) as info:
        net.chain.call("getblock", height=99)
    assert info.value.code == "not_found"
    assert net.chain.call("verify")["ok"]
