"""Transactions we must get onto the chain: sweeps, justice, HTLC claims, funding.

Each is kept (and persisted) until a block confirms it or confirms a conflicting
spend. Until then it is submitted again on every block, so a timelocked claim goes
out as soon as its lock opens. A confirmed one is still watched until it is
BURIED_DEPTH blocks deep: if a reorg takes it out of the chain (and the chain's
mempool lost it), it goes back to pending and is sent again.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from emulator.errors import LnemuError
from emulator.tx import Tx

Done = Callable[[dict[str, Any], Tx, int], Awaitable[None]]
BURIED_DEPTH = 6  # confirmations after which a reorg is not expected to undo a broadcast


class Broadcaster:
    """Pending broadcasts of one peer."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.pending: dict[bytes, dict[str, Any]] = {
            item["txid"]: item for item in node.store.value("pending_broadcasts", [])}
        self.confirmed: dict[bytes, dict[str, Any]] = {  # watched until buried
            item["txid"]: item for item in node.store.value("confirmed_broadcasts", [])}
        self.on_confirmed: Done | None = None

    def _save(self) -> None:
        self.node.store.set_value("pending_broadcasts", list(self.pending.values()))
        self.node.store.set_value("confirmed_broadcasts", list(self.confirmed.values()))

    async def add(self, tx: Tx, purpose: str, channel_id: bytes = b"", **extra: Any) -> None:
        """Keep ``tx`` until it confirms; submit it now."""
        if tx.txid in self.pending:
            return
        item = {"txid": tx.txid, "tx": tx.to_wire(), "purpose": purpose,
                "channel_id": channel_id, **extra}
        self.pending[tx.txid] = item
        self._save()
        await self._submit(item)

    def spent_outpoints(self, item: dict[str, Any]) -> set[tuple[bytes, int]]:
        return {(i["txid"], i["vout"]) for i in item["tx"]["inputs"]}

    async def _submit(self, item: dict[str, Any]) -> None:
        try:
            await self.node.chain.call("submittx", tx=item["tx"])
            if not item.get("announced"):
                item["announced"] = True
                self.node.events.emit("tx_broadcast", txid=item["txid"], purpose=item["purpose"],
                                      channel_id=item["channel_id"])
        except LnemuError as exc:
            item["last_error"] = str(exc)[:200]  # timelocked, in the mempool, or conflicting

    async def on_block(self, height: int, txs: list[Tx]) -> None:
        """Drop what confirmed (or lost to a conflict), then resubmit the rest."""
        spent = {(i.txid, i.vout): tx.txid for tx in txs for i in tx.inputs}
        confirmed = {tx.txid: tx for tx in txs}
        changed = False
        changed = await self._watch_confirmed(height)
        for txid, item in list(self.pending.items()):
            if txid in confirmed:
                del self.pending[txid]
                changed = True
                self.confirmed[txid] = {**item, "height": height}
                if self.on_confirmed is not None and not item.get("reconfirming"):
                    await self.on_confirmed(item, confirmed[txid], height)
            elif any(spent.get(op) not in (None, txid) for op in self.spent_outpoints(item)):
                del self.pending[txid]
                changed = True
                self.node.log.info("broadcast %s (%s) lost to a conflicting spend",
                                   txid.hex()[:16], item["purpose"])
        if changed:
            self._save()
        for item in list(self.pending.values()):
            await self._submit(item)

    async def _watch_confirmed(self, height: int) -> bool:
        """Forget buried broadcasts; put back any that a reorg took out of the chain."""
        changed = False
        for txid, item in list(self.confirmed.items()):
            if height - item["height"] + 1 >= BURIED_DEPTH:
                del self.confirmed[txid]
                changed = True
                continue
            try:
                found = await self.node.chain.call("gettx", txid=txid)
            except LnemuError:
                found = None  # unknown to the chain: neither in a block nor in the mempool
            if found is not None and found.get("status") == "confirmed":
                continue
            del self.confirmed[txid]
            changed = True
            self.node.log.warning("broadcast %s (%s) was reorged out of the chain; sending "
                                  "it again", txid.hex()[:16], item["purpose"])
            self.node.events.emit("tx_reorged_out", txid=txid, purpose=item["purpose"],
                                  channel_id=item["channel_id"])
            self.pending[txid] = {k: v for k, v in item.items() if k != "height"} | {
                "reconfirming": True}
        return changed

    def for_channel(self, channel_id: bytes) -> list[dict[str, Any]]:
        return [i for i in self.pending.values() if i["channel_id"] == channel_id]
