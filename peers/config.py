"""The peer process's configuration (a JSON file written by the supervisor or by hand)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.errors import BadRequest


@dataclass(frozen=True)
class Timers:
    """Spec timers; the ``test`` profile shrinks them so runs take seconds."""

    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    chain_poll: float = 5.0  # catch-up check in case the block feed dropped a block
    to_self_delay: int = 144  # blocks, asked of the peer for its to_local outputs
    min_depth: int = 3  # confirmations before channel_ready
    cltv_expiry_delta: int = 40  # blocks a forwarding peer keeps between its HTLCs
    min_final_cltv_expiry_delta: int = 18
    htlc_deadline_blocks: int = 6  # BOLT 2: go on chain this long before an HTLC expires

    @property
    def fulfilled_deadline_blocks(self) -> int:
        """BOLT 2's R for an HTLC we fulfilled but the peer did not take off its
        commitment: go on chain early enough that our commitment *and* our claim with
        the preimage confirm before the HTLC expires, through a short reorg."""
        return max(self.htlc_deadline_blocks, self.cltv_expiry_delta // 2)
    open_timeout: float = 60.0  # seconds to wait for the peer during channel opening

    @classmethod
    def profile(cls, name: str) -> Timers:
        """Timers of a named profile: ``spec`` (BOLT values) or ``test`` (fast)."""
        if name == "spec":
            return cls()
        if name == "test":
            return cls(ping_interval=2.0, ping_timeout=2.0, reconnect_min=0.05,
                       reconnect_max=1.0, chain_poll=2.0, to_self_delay=6, min_depth=1,
                       cltv_expiry_delta=12, min_final_cltv_expiry_delta=9,
                       htlc_deadline_blocks=2, open_timeout=20.0)
        raise BadRequest(f"unknown timer profile {name!r} (known: spec, test)")


@dataclass
class PeerConfig:
    """Everything a peer process needs to start."""

    name: str
    data_dir: str
    p2p: str
    control: str
    chain_control: str
    chain_blocks: str
    node_secret: bytes | None = None  # None: load or create one in data_dir
    events: str | None = None
    parent_pid: int | None = None
    connect: list[dict[str, str]] = field(default_factory=list)  # [{node_id, endpoint}]
    timers: Timers = field(default_factory=Timers)
    alias: str = ""
    fee_base_msat: int = 1000  # what we charge to forward (our channel_update)
    fee_proportional_millionths: int = 1
    cltv_expiry_delta: int | None = None  # None: the timer profile's value
    watchtower: dict[str, str] | None = None  # {node_id, endpoint} of our tower, if any
    tower: bool = False  # run a watchtower for other peers

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PeerConfig:
        secret = obj.get("node_secret")
        timers = obj.get("timers", "test")
        return cls(
            name=obj["name"], data_dir=obj["data_dir"], p2p=obj["p2p"],
            control=obj["control"], chain_control=obj["chain_control"],
            chain_blocks=obj["chain_blocks"],
            node_secret=bytes.fromhex(secret) if secret else None,
            events=obj.get("events"), parent_pid=obj.get("parent_pid"),
            connect=list(obj.get("connect", [])),
            timers=Timers.profile(timers) if isinstance(timers, str) else Timers(**timers),
            alias=obj.get("alias", obj["name"]),
            fee_base_msat=int(obj.get("fee_base_msat", 1000)),
            fee_proportional_millionths=int(obj.get("fee_proportional_millionths", 1)),
            cltv_expiry_delta=obj.get("cltv_expiry_delta"),
            watchtower=obj.get("watchtower"), tower=bool(obj.get("tower", False)),
        )
