"""The peer process: node key, links, chain follower, wallet and control verbs."""
from __future__ import annotations

import json
import os
from typing import Any

from emulator import identity, policy
from emulator.envelope import Envelope
from emulator.errors import BadRequest, NotFound
from emulator.rpc import AsyncRpcClient
from emulator.service import Service
from emulator.tx import Tx
from peers.chainwatch import ChainFollower
from peers.config import PeerConfig
from peers.links import LinkManager
from peers.wallet import Wallet


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


def _pubkey_arg(value: Any, name: str) -> bytes:
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else value
    except ValueError:
        raise BadRequest(f"{name} is not hex: {value!r}") from None
    if not isinstance(key, bytes) or len(key) != 33 or key[0] not in (2, 3):
        raise BadRequest(f"{name} must be a 33-byte compressed public key")
    return key


class PeerService(Service):
    """One Lightning peer."""

    kind = "peer"

    def __init__(self, config: PeerConfig) -> None:
        super().__init__(config.name, config.control, config.events, config.data_dir,
                         config.parent_pid)
        self.config = config
        self.node_secret = load_or_create_secret(config)
        self.node_id = identity.pubkey(self.node_secret)
        self.wallet = Wallet(self.node_secret, next_index=self._load_wallet_index())
        self.chain: AsyncRpcClient | None = None
        self.follower: ChainFollower | None = None
        self.links: LinkManager | None = None

    def _load_wallet_index(self) -> int:
        path = self.data_dir / "wallet.json"
        if path.exists():
            return int(json.loads(path.read_text())["next_index"])
        return 1

    def _save_wallet(self) -> None:
        tmp = self.data_dir / "wallet.json.tmp"
        tmp.write_text(json.dumps(self.wallet.to_wire()))
        tmp.replace(self.data_dir / "wallet.json")

    async def setup(self) -> None:
        self.chain = AsyncRpcClient(self.ctx, self.config.chain_control)
        self.links = LinkManager(self.ctx, self.node_id, self.config.p2p, self.config.timers,
                                 self.events, self.log, self.on_message, self.config.alias)
        await self.links.start()
        self.follower = ChainFollower(self.ctx, self.chain, self.config.chain_blocks,
                                      self.config.timers.chain_poll, self.log,
                                      self.on_block, self.on_reorg)
        await self.follower.catch_up()
        self.spawn(self.follower.run(), "chain-follower")
        for target in self.config.connect:
            await self.links.connect(_pubkey_arg(target["node_id"], "node_id"),
                                     target["endpoint"])

    async def teardown(self) -> None:
        if self.links:
            await self.links.close()
        if self.follower:
            self.follower.close()
        if self.chain:
            self.chain.close()

    def ready_info(self) -> dict[str, Any]:
        return {**super().ready_info(), "node_id": self.node_id.hex(), "p2p": self.config.p2p}

    # --- inputs -------------------------------------------------------------------
    async def on_block(self, height: int, block_hash: bytes, txs: list[Tx]) -> None:
        for txid in self.wallet.apply_block(height, txs):
            self.events.emit("tx_confirmed", txid=txid, height=height)

    async def on_reorg(self, height: int) -> None:
        self.wallet.forget()

    async def on_message(self, node_id: bytes, env: Envelope) -> None:
        """Dispatch a Lightning message to ``on_<type>``; unknown ones get a warning."""
        handler = getattr(self, f"on_{env.type}", None)
        if handler is None:
            self.log.info("ignoring %s from %s (not handled yet)", env.type, node_id.hex()[:16])
            return
        await handler(node_id, env.body)

    # --- verbs --------------------------------------------------------------------
    async def rpc_getinfo(self) -> dict[str, Any]:
        """Node id, alias, block height, peers and wallet balance."""
        connected = [link for link in self.links.links.values() if link.connected]
        return {"kind": "peer", "id": self.node_id, "alias": self.config.alias,
                "name": self.name, "blockheight": self.follower.height,
                "num_peers": len(connected), "p2p": self.config.p2p,
                "wallet_key": self.wallet.key(0), **self.wallet.balance()}

    async def rpc_newaddress(self) -> bytes:
        """A fresh on-chain address (a 33-byte public key)."""
        pub = self.wallet.new_address()
        self._save_wallet()
        return pub

    async def rpc_walletbalance(self) -> dict[str, int]:
        """Confirmed, spendable and reserved on-chain funds in sat."""
        return self.wallet.balance()

    async def rpc_sendonchain(self, address: Any, amount_sat: int,
                              feerate_sat_per_kb: int = 1000) -> dict[str, Any]:
        """Pay ``amount_sat`` on chain to ``address`` (a public key)."""
        dest = _pubkey_arg(address, "address")
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
        link = await self.links.connect(_pubkey_arg(node_id, "node_id"), endpoint)
        return link.info()

    async def rpc_disconnect(self, node_id: Any) -> bool:
        """Close the link to a peer."""
        await self.links.disconnect(_pubkey_arg(node_id, "node_id"))
        return True

    async def rpc_listpeers(self) -> list[dict[str, Any]]:
        """Every link with its direction and state."""
        return [link.info() for link in self.links.links.values()]

    async def rpc_dev_linkfault(self, node_id: Any, kind: str) -> bool:
        """Dev: the next message to a peer breaks the session (gap, duplicate, stale_session)."""
        key = _pubkey_arg(node_id, "node_id")
        if key not in self.links.links:
            raise NotFound(f"no link to {key.hex()}")
        self.links.inject_fault(key, kind)
        await self.links.send(key, "ping", {"num_pong_bytes": 0})
        return True
