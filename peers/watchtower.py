"""Watchtowers: a peer that punishes breaches for clients that are offline.

As lnd's towers do: after every revocation the client builds the justice
transaction for the peer's commitment it has just revoked (every revocable output
of it, swept to the client's wallet key) and hands the tower a blob. The blob is
the signed justice transaction, encrypted with ChaCha20-Poly1305 under a key
derived from the whole txid of the revoked commitment, and filed under a hint, the
first 16 bytes of SHA-256 of that txid. The tower learns nothing until the revoked
commitment is on chain: then the hint of a transaction in a block matches, the
txid opens the blob, and the tower broadcasts the justice transaction.

Every blob has the same size (the plaintext is padded), so what a tower stores
grows by one fixed-size record per revocation. A justice transaction that would
not fit (a commitment with many HTLC outputs) keeps the largest outputs that do.
The tower does not follow the cheater's second-stage HTLC transactions; the client
does when it is back (``peers.onchain``).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from emulator.crypto import shachain
from emulator.errors import LnemuError
from emulator.tx import Tx
from peers import sweeps
from peers.htlc_types import Side
from peers.onchain import JUSTICE_FEERATE

HINT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16  # Poly1305
PLAINTEXT_BYTES = 2048  # a length prefix, the justice tx, zero padding
MAX_JUSTICE_BYTES = PLAINTEXT_BYTES - 2
MAX_JUSTICE_INPUTS = 10  # ~190 bytes each: what fits in the plaintext
BLOB_BYTES = NONCE_BYTES + PLAINTEXT_BYTES + TAG_BYTES
RECORD_BYTES = HINT_BYTES + BLOB_BYTES  # what the tower stores per revocation
KEY_TAG = b"lnemu/tower/key"

TOWER_SCHEMA = """
CREATE TABLE IF NOT EXISTS tower_blobs (hint BLOB NOT NULL, client BLOB NOT NULL,
    blob BLOB NOT NULL, justice_txid BLOB, PRIMARY KEY (hint, client));
"""
CLIENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS tower_queue (hint BLOB PRIMARY KEY, blob BLOB NOT NULL);
"""


class TowerBlobError(LnemuError):
    """A blob that does not open with the given txid, or holds no justice tx."""

    code = "tower_blob"


# --- the blob ------------------------------------------------------------------------
def breach_hint(txid: bytes) -> bytes:
    """What the tower files a blob under: the first 16 bytes of SHA-256(txid)."""
    return hashlib.sha256(txid).digest()[:HINT_BYTES]


def blob_key(txid: bytes) -> bytes:
    """The blob's encryption key: only the whole breach txid gives it."""
    return hashlib.sha256(KEY_TAG + txid).digest()


def seal(breach_txid: bytes, justice: Tx) -> tuple[bytes, bytes]:
    """The (hint, blob) of a justice tx for the commitment ``breach_txid``."""
    data = justice.serialize()
    if len(data) > MAX_JUSTICE_BYTES:
        raise TowerBlobError(f"justice tx of {len(data)} bytes does not fit in a blob")
    plaintext = len(data).to_bytes(2, "big") + data
    plaintext += bytes(PLAINTEXT_BYTES - len(plaintext))
    hint = breach_hint(breach_txid)
    nonce = os.urandom(NONCE_BYTES)
    return hint, nonce + ChaCha20Poly1305(blob_key(breach_txid)).encrypt(nonce, plaintext, hint)


def open_blob(breach_txid: bytes, blob: bytes) -> Tx:
    """The justice tx inside ``blob``; TowerBlobError if ``breach_txid`` does not open it."""
    if len(blob) != BLOB_BYTES:
        raise TowerBlobError(f"blob of {len(blob)} bytes, expected {BLOB_BYTES}")
    cipher = ChaCha20Poly1305(blob_key(breach_txid))
    try:
        plaintext = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                   breach_hint(breach_txid))
    except InvalidTag:
        raise TowerBlobError("blob does not open with this txid") from None
    size = int.from_bytes(plaintext[:2], "big")
    if size > MAX_JUSTICE_BYTES:
        raise TowerBlobError(f"blob claims a {size}-byte justice tx")
    return Tx.deserialize(plaintext[2:2 + size])


def build_justice(ch: Any, revoked: int, dest_cond: list) -> tuple[bytes, Tx]:
    """(breach txid, signed justice tx) for the peer's revoked commitment ``revoked``.

    Call it right after the revocation: the peer's per-commitment point of that
    commitment is forgotten at the next one.
    """
    spec, built = ch.build(Side.REMOTE, revoked)
    secret = ch.revocations.get(shachain.index_for_commitment(revoked))
    revocation_privkey = ch.secrets.revocation_privkey(secret)
    outputs = sorted(sweeps.revocable_outputs(built.tx, spec.keys.revocation_pubkey),
                     key=lambda out: -out[1])[:MAX_JUSTICE_INPUTS]
    while True:  # keep the largest outputs that fit in a blob
        justice = sweeps.justice_tx(built.tx, outputs, revocation_privkey, dest_cond,
                                    JUSTICE_FEERATE)  # SweepError when nothing is left
        if justice.size <= MAX_JUSTICE_BYTES:
            return built.tx.txid, justice
        outputs = outputs[:-1]


# --- the client: in every peer whose config names a tower ----------------------------
class TowerClient:
    """Backs up a justice blob per revocation; queues them while the tower is away."""

    def __init__(self, node: Any) -> None:
        self.node = node
        tower = node.config.watchtower
        self.tower_id: bytes | None = bytes.fromhex(tower["node_id"]) if tower else None
        self.endpoint: str | None = tower["endpoint"] if tower else None
        if self.tower_id is not None:
            node.store.db.executescript(CLIENT_SCHEMA)

    @property
    def enabled(self) -> bool:
        return self.tower_id is not None

    async def start(self) -> None:
        """Dial the tower (the link redials on its own after a disconnect)."""
        if self.enabled:
            await self.node.links.connect(self.tower_id, self.endpoint)

    def queued(self) -> int:
        """Backups the tower has not acknowledged yet."""
        if not self.enabled:
            return 0
        return self.node.store.db.execute("SELECT COUNT(*) FROM tower_queue").fetchone()[0]

    async def on_revocation(self, ch: Any, revoked: int) -> None:
        """The peer revoked its commitment ``revoked``: back up its justice tx."""
        if not self.enabled:
            return
        try:
            breach_txid, justice = build_justice(ch, revoked, self.node.onchain.dest)
            hint, blob = seal(breach_txid, justice)
        except (sweeps.SweepError, shachain.ShachainError, TowerBlobError) as exc:
            self.node.log.info("channel %s: no tower backup for commitment %d: %s",
                               ch.cid.hex()[:16], revoked, exc)
            return
        # Persist first: once the peer forgets this commitment's point we cannot rebuild it.
        self.node.store.execute("INSERT OR REPLACE INTO tower_queue VALUES (?, ?)",
                                (hint, blob))
        await self._send(hint, blob)

    async def on_connected(self, peer_id: bytes) -> None:
        """The tower is (back) up: send everything it has not acknowledged."""
        if peer_id != self.tower_id:
            return
        rows = self.node.store.db.execute(
            "SELECT hint, blob FROM tower_queue ORDER BY rowid").fetchall()
        for hint, blob in rows:
            if not await self._send(hint, blob):
                break
        if rows:
            self.node.log.info("sent %d queued backups to the tower", len(rows))

    async def on_ack(self, peer_id: bytes, body: dict[str, Any]) -> None:
        """The tower stored a backup: drop it from the queue."""
        if peer_id == self.tower_id:
            self.node.store.execute("DELETE FROM tower_queue WHERE hint = ?", (body["hint"],))

    async def _send(self, hint: bytes, blob: bytes) -> bool:
        if not self.node.links.is_connected(self.tower_id):
            return False  # queued: sent again when the link is back
        try:
            await self.node.links.send(self.tower_id, "tower_backup", {"hint": hint, "blob": blob})
        except LnemuError as exc:
            self.node.log.info("tower backup not sent: %s", exc)
            return False
        return True


# --- the tower: a peer started in tower mode ---------------------------------------------
class TowerServer:
    """Stores clients' blobs and broadcasts justice when a breach reaches a block."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.db = node.store.db
        self.db.executescript(TOWER_SCHEMA)

    def stats(self) -> dict[str, int]:
        """How many records the tower keeps and their total size in bytes."""
        count, size = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(hint) + LENGTH(blob)), 0) "
            "FROM tower_blobs").fetchone()
        return {"records": count, "bytes": size}

    async def on_backup(self, client: bytes, body: dict[str, Any]) -> None:
        """Store one client blob (each client's own: nobody can overwrite another's)."""
        hint, blob = body["hint"], body["blob"]
        if len(hint) != HINT_BYTES or len(blob) != BLOB_BYTES:
            self.node.log.warning("tower: refused a backup from %s: %d-byte hint, %d-byte "
                                  "blob", client.hex()[:16], len(hint), len(blob))
            return
        stored = self.node.store.execute(
            "INSERT OR IGNORE INTO tower_blobs (hint, client, blob) VALUES (?, ?, ?)",
            (hint, client, blob)).rowcount
        if stored:
            self.node.events.emit("tower_backup_stored", client=client, hint=hint)
        try:
            await self.node.links.send(client, "tower_ack", {"hint": hint})
        except LnemuError:
            pass  # the client sends it again on reconnect; the store ignores the repeat

    async def on_block(self, height: int, txs: list[Tx]) -> None:
        """Check every transaction's txid against the hints we hold."""
        for tx in txs:
            rows = self.db.execute(
                "SELECT client, blob, justice_txid FROM tower_blobs WHERE hint = ?",
                (breach_hint(tx.txid),)).fetchall()
            for client, blob, justice_txid in rows:
                await self._respond(tx, client, blob, justice_txid is None, height)

    async def _respond(self, breach: Tx, client: bytes, blob: bytes, first: bool,
                       height: int) -> None:
        try:
            justice = open_blob(breach.txid, blob)
        except LnemuError as exc:  # a wrong key or a malformed tx inside
            self.node.log.warning("tower: blob of %s for %s: %s", client.hex()[:16],
                                  breach.txid_hex[:16], exc)
            return
        if any(txin.txid != breach.txid for txin in justice.inputs):
            self.node.log.warning("tower: blob of %s spends something else than %s",
                                  client.hex()[:16], breach.txid_hex[:16])
            return
        if first:  # a replay of the chain after a restart hands it to the broadcaster again
            self.node.store.execute("UPDATE tower_blobs SET justice_txid = ? WHERE hint = ? "
                                    "AND client = ?", (justice.txid, breach_hint(breach.txid), client))
            self.node.events.emit("tower_breach_seen", client=client, breach_txid=breach.txid,
                                  height=height)
            self.node.events.emit("tower_justice", client=client, txid=justice.txid,
                                  breach_txid=breach.txid,
                                  amount_sat=sum(out.amount_sat for out in justice.outputs))
        await self.node.broadcast(justice, "tower justice")
