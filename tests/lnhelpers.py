"""Helpers for channel process tests: open a channel, read balances, mine to a state."""
from __future__ import annotations

from typing import Any

from emulator.network import Network
from emulator.waiting import wait_for


def channel_of(net: Network, name: str, index: int = 0) -> dict[str, Any]:
    return net.rpc(name).call("listchannels")[index]


def open_channel(net: Network, opener: str, acceptor: str, amount_sat: int,
                 push_msat: int = 0) -> bytes:
    """Open a channel and mine until both sides see it OPEN; its channel id."""
    res = net.rpc(opener).call("fundchannel", node_id=net.node_id(acceptor),
                               amount_sat=amount_sat, push_msat=push_msat, reply_timeout=30)
    cid = res["channel_id"]

    def both_open() -> bool:
        net.chain.call("mine", n=1)
        return all(_state(net, n, cid) == "OPEN" for n in (opener, acceptor))
    wait_for(both_open, 30, what=f"channel {opener}-{acceptor} open")
    return cid


def _state(net: Network, name: str, cid: bytes) -> str | None:
    for ch in net.rpc(name).call("listchannels"):
        if ch["channel_id"] == cid:
            return ch["state"]
    return None


def state(net: Network, name: str, cid: bytes) -> str | None:
    return _state(net, name, cid)


def channel(net: Network, name: str, cid: bytes) -> dict[str, Any]:
    for ch in net.rpc(name).call("listchannels"):
        if ch["channel_id"] == cid:
            return ch
    raise AssertionError(f"{name} has no channel {cid.hex()}")


def pay(net: Network, payer: str, payee: str, amount_msat: int, **kwargs: Any) -> dict[str, Any]:
    inv = net.rpc(payee).call("invoice", amount_msat=amount_msat, description="test")
    return net.rpc(payer).call("pay", bolt11=inv["bolt11"], **kwargs)


def quiet(net: Network, cid: bytes, names: tuple[str, str]) -> bool:
    """No HTLC in flight on either side and both views of the balances agree."""
    a, b = (channel(net, n, cid) for n in names)
    return (a["quiescent"] and b["quiescent"] and a["local_msat"] == b["remote_msat"]
            and a["remote_msat"] == b["local_msat"])


def mine_until(net: Network, predicate, timeout: float = 60.0, what: str = "") -> Any:
    """Mine a block per poll until ``predicate`` holds."""
    def step() -> Any:
        net.chain.call("mine", n=1)
        return predicate()
    return wait_for(step, timeout, what=what or "condition after mining")


def wealth(net: Network) -> int:
    """Peers' confirmed wallets plus the miner's fees (must equal the genesis supply
    once every channel is closed and swept)."""
    net.wait_synced()
    miner = sum(c["amount_sat"] for c in net.chain.call("listunspent", pubkey=net.miner_key))
    return sum(net.balances().values()) + miner


def worth_conserved(net: Network) -> bool:
    """Wallets + channel balances + HTLCs in flight + miner = supply, to the msat."""
    from emulator import invariants
    net.wait_synced()
    worth = {n: invariants.peer_worth_msat(net, n) for n in net.plans}
    check = invariants.wealth_check(net, worth)
    assert check.ok, check.detail
    return True
