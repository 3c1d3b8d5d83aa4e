"""QR rendering of invoices: payload form, terminal text, PNG and SVG files."""
from __future__ import annotations

import math
from pathlib import Path

from emulator.crypto import qr
from tests.conftest import load_vector

INVOICE = load_vector("bolt11-examples.json")["valid"][1]["invoice"]
QR_ALPHANUMERIC = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
HALF_BLOCKS = {" ", "▀", "▄", "█"}


def test_payload_is_upper_case_lightning_uri() -> None:
    payload = qr.invoice_qr_payload(INVOICE)
    assert payload == "LIGHTNING:" + INVOICE.upper()
    assert set(payload) <= QR_ALPHANUMERIC
    assert qr.invoice_qr_payload("lightning:" + INVOICE) == payload  # no doubled scheme
    assert qr.invoice_qr_payload(payload) == payload


def test_upper_case_payload_uses_alphanumeric_mode_and_a_smaller_symbol() -> None:
    upper = qr.make_qr(qr.invoice_qr_payload(INVOICE))
    lower = qr.make_qr("lightning:" + INVOICE)
    assert upper.mode == "alphanumeric" and lower.mode == "byte"
    assert upper.version < lower.version
    assert not upper.is_micro


def test_terminal_rendering_has_expected_size_and_characters() -> None:
    text = qr.invoice_qr_payload(INVOICE)
    side = qr.make_qr(text).symbol_size(scale=1, border=4)[0]
    lines = qr.qr_terminal(text).splitlines()
    assert len(lines) == math.ceil(side / 2)  # two module rows per line
    assert all(len(line) == side for line in lines)
    assert set("".join(lines)) <= HALF_BLOCKS
    assert {"▀", "▄"} & set("".join(lines))


def test_write_png_creates_a_png(tmp_path: Path) -> None:
    path = qr.write_png(qr.invoice_qr_payload(INVOICE), tmp_path / "invoice.png", scale=3)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_write_svg_creates_an_svg(tmp_path: Path) -> None:
    path = qr.write_svg(qr.invoice_qr_payload(INVOICE), tmp_path / "invoice.svg")
    content = path.read_text()
    assert "<svg" in content and "</svg>" in content
