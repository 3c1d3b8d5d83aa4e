"""QR codes for invoices: terminal rendering, PNG and SVG files (via segno).

BOLT 11: a writer "SHOULD use upper case for QR codes". Upper case bech32 fits QR's
alphanumeric mode (0-9, A-Z, space and ``$%*+-./:``), which packs 5.5 bits per character
instead of 8, so the symbol is smaller and easier to scan. ``invoice_qr_payload`` gives the
form wallets expect: the ``LIGHTNING:`` URI scheme (BOLT 11 recommends ``lightning:``, and
URI schemes are case-insensitive) followed by the upper-case invoice, all alphanumeric.
"""
from __future__ import annotations

import io
from pathlib import Path

import segno

LIGHTNING_URI_SCHEME = "LIGHTNING:"


def invoice_qr_payload(bolt11: str) -> str:
    """The QR text for an invoice: ``LIGHTNING:`` + the invoice in upper case."""
    invoice = bolt11.strip()
    if invoice.upper().startswith(LIGHTNING_URI_SCHEME):
        invoice = invoice[len(LIGHTNING_URI_SCHEME) :]
    return LIGHTNING_URI_SCHEME + invoice.upper()


def make_qr(text: str) -> segno.QRCode:
    """A standard (never Micro) QR code for ``text``; segno picks the smallest version."""
    return segno.make(text, micro=False)


def qr_terminal(text: str, border: int = 4) -> str:
    """The QR code as text, two modules per character row using half-block characters."""
    out = io.StringIO()
    make_qr(text).terminal(out=out, border=border, compact=True)
    return out.getvalue()


def write_png(text: str, path: str | Path, scale: int = 4, border: int = 4) -> Path:
    """Write the QR code for ``text`` as a PNG image; return the path."""
    target = Path(path)
    make_qr(text).save(target, kind="png", scale=scale, border=border)
    return target


def write_svg(
    text: str, path: str | Path, scale: int = 4, border: int = 4, dark: str = "#000"
) -> Path:
    """Write the QR code for ``text`` as an SVG image; return the path."""
    target = Path(path)
    make_qr(text).save(target, kind="svg", scale=scale, border=border, dark=dark)
    return target
