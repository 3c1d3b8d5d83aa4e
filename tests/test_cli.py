"""The ``lnemu`` launcher: help, invoice decode and QR, exit codes for bad input."""
from __future__ import annotations

import json

from click.testing import CliRunner

from emulator.cli import main
from tests.conftest import load_vector

COFFEE = load_vector("bolt11-examples.json")["valid"][1]["invoice"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_help_lists_the_verbs():
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in ("run", "chain", "peer", "invoice", "rpc"):
        assert verb in result.output
    chain = invoke("chain", "--help")
    for verb in ("start", "info", "tx", "block", "mine"):
        assert verb in chain.output


def test_invoice_decode_prints_fields_and_json():
    text = invoke("invoice", "decode", COFFEE)
    assert text.exit_code == 0
    assert "1 cup coffee" in text.output and "250000000" in text.output
    as_json = json.loads(invoke("invoice", "decode", COFFEE, "--json").output)
    assert as_json["amount_msat"] == 250_000_000
    assert as_json["payee"] == load_vector("bolt11-examples.json")["payee_pubkey"]
    assert as_json["expiry"] == 60


def test_invoice_decode_rejects_garbage_with_exit_2():
    result = invoke("invoice", "decode", "lnbc1notaninvoice")
    assert result.exit_code == 2
    assert "invalid invoice" in result.output


def test_invoice_qr_prints_a_code_and_writes_png(tmp_path):
    png = tmp_path / "coffee.png"
    result = invoke("invoice", "qr", COFFEE, "--png", str(png))
    assert result.exit_code == 0
    assert "█" in result.output or "▀" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chain_verbs_need_an_endpoint(monkeypatch):
    monkeypatch.delenv("LNEMU_CHAIN_RPC", raising=False)
    result = invoke("chain", "info")
    assert result.exit_code == 2 and "no chain endpoint" in result.output
