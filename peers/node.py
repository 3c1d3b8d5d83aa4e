"""The peer process: node key, links, chain follower, wallet, channels and verbs."""
from __future__ import annotations

import os
from typing import Any

from emulator import identity, policy
from emulator.envelope import Envelope
from emulator.errors import BadRequest, LnemuError, NotFound
from emulator.rpc import AsyncRpcClient, RpcError
from emulator.service import Service
from emulator.tx import Tx
from peers import crashpoints
from peers.broadcaster import Broadcaster
from peers.chainwatch import ChainFollower
from peers.channels import ChannelManager
from peers.closing import Closing
from peers.config import PeerConfig
from peers.forwarding import Forwarder
from peers.gossip_sync import GossipSync
from peers.links import LinkManager
from peers.messages import Messages
from peers.onchain import OnchainResolver
from peers.opening import Opening
from peers.paying import Payer
from peers.payments import Payments
from peers.receiving import Receiver
from peers.reestablish import Reestablish
from peers.store import Store
from peers.verbs import ChannelVerbs
from peers.wallet import Wallet
from peers.watchtower import TowerClient, TowerServer

GOSSIP_MESSAGES = {"channel_announcement", "channel_update", "node_announcement",
                   "gossip_timestamp_filter"}
CHANNEL_MESSAGES = {"announcement_signatures",
    "open_channel", "accept_channel", "funding_created", "funding_signed", "channel_ready",
    "update_add_htlc", "update_fulfill_htlc", "update_fail_htlc", "update_fail_malformed_htlc",
    "commitment_signed", "revoke_and_ack", "update_fee", "shutdown", "closing_signed",
    "channel_reestablish", "error", "warning"}


def load_or_create_secret(config: PeerConfig) -> bytes:
    """The node secret: from the config, else the data directory, else a new one."""
    if config.node_secret is not None:
        return config.node_secret
    path = os.path.join(config.data_dir, "node_secret")
    if os.path.exists(path):
        with open(path) as fh:
            return bytes.fromhex(fh.read().strip())
    secret = identity.child_secret(os.urandom(32), "node")
    os.makedirs(config.data_dir, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


def pubkey_arg(value: Any, name: str) -> bytes:
    """A 33-byte public key from hex or bytes, or BadRequest naming the argument."""
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else value
    except ValueError:
        raise BadRequest(f"{name} is not hex: {value!r}") from None
    if not isinstance(key, bytes) or len(key) != 33 or key[0] not in (2, 3):
        raise BadRequest(f"{name} must be a 33-byte compressed public key")
    return key


class PeerService(ChannelVerbs, Service):
    """One Lightning peer."""

    kind = "peer"

    def __init__(self, config: PeerConfig) -> None:
        super().__init__(config.name, config.control, config.events, config.data_dir,
                         config.parent_pid)
        self.config = config
        self.node_secret = load_or_create_secret(config)
        self.node_id = identity.pubkey(self.node_secret)
        self.store = Store(self.data_dir / "peer.sqlite")
        self.wallet = Wallet(self.node_secret, next_index=self.store.value("wallet_index", 1))
        self.chain: AsyncRpcClient | None = None
        self.follower: ChainFollower | None = None
        self.links: LinkManager | None = None
        self.channels = ChannelManager(self)
        self.opening = Opening(self)
        self.closing = Closing(self)
        self.payments = Payments(self)
        self.broadcaster = Broadcaster(self)
        self.onchain = OnchainResolver(self)
        self.reestablish = Reestablish(self)
        self.forwarder = Forwarder(self)
        self.gossip = GossipSync(self)
        self.payer = Payer(self)
        self.receiver = Receiver(self)
        self.messages = Messages(self)
        self.tower_client = TowerClient(self)
        self.tower_server = TowerServer(self) if config.tower else None
        self.channels.on_incoming_htlc = self.payments.on_incoming_htlc
        self.channels.on_incoming_signed = self.payments.peel_ahead
        self.channels.on_htlc_fulfilled = self._htlc_fulfilled
        self.channels.on_htlc_failed = self._htlc_failed
        self.broadcaster.on_confirmed = self._broadcast_confirmed

    @property
    def height(self) -> int:
        """The chain's height, for every CLTV decision: never the block being replayed."""
        return self.follower.tip if self.follower else 0

    async def chain_height(self) -> int:
        """``height``, and after a start or a pause the chain's own answer: for the
        checks of an incoming HTLC, which a lagging view could let expire."""
        return await self.follower.fresh_tip() if self.follower else 0

    async def setup(self) -> None:
        self.chain = AsyncRpcClient(self.ctx, self.config.chain_control)
        self.channels.load()
        self.payments.reconcile()
        self.links = LinkManager(self.ctx, self.node_id, self.config.p2p, self.config.timers,
                                 self.events, self.log, self.on_message, self.config.alias)
        self.links.on_connected = self._on_connected
        crashpoints.register_sender(self.links.flush)
        self.links.on_disconnected = self.reestablish.on_disconnected
        await self.links.start()
        self.follower = ChainFollower(self.ctx, self.chain, self.config.chain_blocks,
                                      self.config.timers.chain_poll, self.log,
                                      self.on_block, self.on_reorg)
        await self.follower.catch_up()
        self.spawn(self.follower.run(), "chain-follower")
        self.spawn(self.gossip.run(), "gossip")
        self.spawn(self.gossip.check_received(), "gossip-check")
        for target in self.config.connect:
            await self.links.connect(pubkey_arg(target["node_id"], "node_id"),
                                     target["endpoint"])
        await self._redial_channel_peers()
        await self.tower_client.start()

    async def _redial_channel_peers(self) -> None:
        """After a restart, dial every peer we have a live channel with (as nodes do)."""
        known = self.store.value("peer_addresses", {})
        for ch in self.channels.channels.values():
            address = known.get(ch.peer_id)
            if address and ch.peer_id not in self.links.links and ch.sm.is_active:
                await self.links.connect(ch.peer_id, address)

    async def teardown(self) -> None:
        self.gossip.close()
        self.payer.persist()
        if self.links:
            await self.links.close()
        if self.follower:
            self.follower.close()
        if self.chain:
            self.chain.close()
        self.store.close()

    def ready_info(self) -> dict[str, Any]:
        return {**super().ready_info(), "node_id": self.node_id.hex(), "p2p": self.config.p2p}

    # --- chain ----------------------------------------------------------------------
    def resumed(self) -> None:
        """After a pause our view of the chain may lag: catch up now, and ask the
        chain's height before an incoming HTLC is checked against ours."""
        self.events.emit("resumed", height=self.height)
        if self.follower is not None and not self.stopping.is_set():
            self.follower.mark_stale()
            self.spawn(self.follower.catch_up(), "catch-up-after-pause")

    async def on_block(self, height: int, block_hash: bytes, txs: list[Tx]) -> None:
        for txid in self.wallet.apply_block(height, txs):
            self.events.emit("tx_confirmed", txid=txid, height=height)
        if self.follower is None or height < self.follower.height:
            return  # catching up: act once we are at the tip
        self.gossip.on_block(txs)
        await self.broadcaster.on_block(height, txs)
        await self.onchain.on_block(height, txs)
        if self.tower_server is not None:
            await self.tower_server.on_block(height, txs)
        for ch in list(self.channels.channels.values()):
            await self.opening.check_depth(ch)
        await self.receiver.on_block(height)
        await self.channels.check_deadlines(height)
        await self.channels.check_feerates()

    async def on_reorg(self, height: int) -> None:
        self.wallet.forget()

    async def broadcast(self, tx: Tx, purpose: str, channel_id: bytes = b"") -> None:
        """Get ``tx`` onto the chain (resubmitted every block until it confirms)."""
        await self.broadcaster.add(tx, purpose, channel_id)

    async def chain_tx(self, txid: bytes) -> dict[str, Any] | None:
        try:
            return await self.chain.call("gettx", txid=txid)
        except RpcError:
            return None

    async def _broadcast_confirmed(self, item: dict[str, Any], tx: Tx, height: int) -> None:
        self.events.emit("tx_confirmed", txid=tx.txid, height=height, purpose=item["purpose"])
        if item["purpose"] in ("htlc-timeout", "htlc-timeout claim"):
            await self.payments.on_htlc_timed_out_onchain(item["payment_hash"])
        if item["purpose"] in ("htlc-success", "htlc claim"):
            self.receiver.mark_paid(item["payment_hash"])
        if "second_stage" in item and item["channel_id"] in self.channels.channels:
            ch = self.channels.channels[item["channel_id"]]
            await self.onchain.second_stage_confirmed(ch, item, tx)

    async def _on_connected(self, peer_id: bytes) -> None:
        await self.reestablish.on_connected(peer_id)
        await self.gossip.on_connected(peer_id)
        await self.tower_client.on_connected(peer_id)

    async def _htlc_fulfilled(self, ch: Any, htlc: Any, preimage: bytes) -> None:
        if self.forwarder.is_forward(ch, htlc):
            await self.forwarder.on_fulfilled(ch, htlc, preimage)
        else:
            await self.payments.on_htlc_fulfilled(ch, htlc, preimage)

    async def _htlc_failed(self, ch: Any, htlc: Any, info: dict[str, Any]) -> None:
        if self.forwarder.is_forward(ch, htlc):
            await self.forwarder.on_failed(ch, htlc, info)
        else:
            await self.payments.on_htlc_failed(ch, htlc, info)

    # --- messages ---------------------------------------------------------------------
    async def on_message(self, node_id: bytes, env: Envelope) -> None:
        """Dispatch a Lightning message; protocol errors never take the process down."""
        if env.type in GOSSIP_MESSAGES:
            self.gossip.receive(node_id, env.type, env.body)
            return
        if env.type in CHANNEL_MESSAGES:
            if env.type == "channel_reestablish":
                await self.reestablish.on_channel_reestablish(node_id, env.body)
            else:
                await self.channels.dispatch(node_id, env.type, env.body)
            return
        if env.type == "tower_backup" and self.tower_server is not None:
            await self.tower_server.on_backup(node_id, env.body)
            return
        if env.type == "tower_ack":
            await self.tower_client.on_ack(node_id, env.body)
            return
        self.log.info("ignoring %s from %s (not handled)", env.type, node_id.hex()[:16])

    # --- verbs --------------------------------------------------------------------------
    async def rpc_getinfo(self) -> dict[str, Any]:
        """Node id, alias, block height, peers, channels, what we know of the graph, and
        wallet balance."""
        connected = [link for link in self.links.links.values() if link.connected]
        states: dict[str, int] = {}
        for ch in self.channels.channels.values():
            states[ch.state.name] = states.get(ch.state.name, 0) + 1
        return {"kind": "peer", "id": self.node_id, "alias": self.config.alias,
                "name": self.name, "blockheight": self.height, "num_peers": len(connected),
                "p2p": self.config.p2p, "wallet_key": self.wallet.key(0), "channels": states,
                "fees_earned_msat": self.forwarder.earned_msat,
                "graph": self.gossip.graph.counts(), "gossip_backlog": self.gossip.inbox.qsize(),
                **self.wallet.balance()}

    async def rpc_newaddress(self) -> bytes:
        """A fresh on-chain address (a 33-byte public key)."""
        pub = self.wallet.new_address()
        self.store.set_value("wallet_index", self.wallet.next_index)
        return pub

    async def rpc_walletbalance(self) -> dict[str, int]:
        """Confirmed, spendable and reserved on-chain funds in sat."""
        return self.wallet.balance()

    async def rpc_sendonchain(self, address: Any, amount_sat: int,
                              feerate_sat_per_kb: int = 1000) -> dict[str, Any]:
        """Pay ``amount_sat`` on chain to ``address`` (a public key)."""
        dest = pubkey_arg(address, "address")
        if type(feerate_sat_per_kb) is not int or not 0 <= feerate_sat_per_kb <= 10_000_000:
            raise BadRequest(f"feerate_sat_per_kb out of range: {feerate_sat_per_kb!r}")
        tx = self.wallet.build_payment(policy.pk(dest), amount_sat, feerate_sat_per_kb)
        result = await self.chain.call("submittx", tx=tx.to_wire())
        self.wallet.mark_sent(tx, amount_sat)
        self.events.emit("tx_sent", txid=tx.txid, amount_sat=amount_sat, to=dest,
                         fee_sat=result["fee_sat"])
        return {"txid": tx.txid, "fee_sat": result["fee_sat"]}

    async def rpc_connect(self, node_id: Any, endpoint: str) -> dict[str, Any]:
        """Connect to a peer at ``endpoint`` (ipc:// or tcp://host:port)."""
        if not isinstance(endpoint, str):
            raise BadRequest("endpoint must be a string")
        link = await self.links.connect(pubkey_arg(node_id, "node_id"), endpoint)
        return link.info()

    async def rpc_disconnect(self, node_id: Any) -> bool:
        """Close the link to a peer."""
        await self.links.disconnect(pubkey_arg(node_id, "node_id"))
        return True

    async def rpc_listpeers(self) -> list[dict[str, Any]]:
        """Every link with its direction and state."""
        return [link.info() for link in self.links.links.values()]

    async def rpc_dev_linkfault(self, node_id: Any, kind: str) -> bool:
        """Dev: the next message to a peer breaks the session (gap, duplicate, stale_session)."""
        key = pubkey_arg(node_id, "node_id")
        if key not in self.links.links:
            raise NotFound(f"no link to {key.hex()}")
        self.links.inject_fault(key, kind)
        try:
            await self.links.send(key, "ping", {"num_pong_bytes": 0})
        except LnemuError as exc:
            raise BadRequest(f"could not send: {exc}") from None
        return True
