"""A run's report on disk: ``summary.json``, ``report.md`` and four PNG plots.

The runner gathers what happened into a :class:`RunData` of plain records and
hands it to :func:`write_report`; nothing here talks to processes or sockets.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from emulator import plots
from emulator.crypto import bolt11 as bolt11_codec
from emulator.crypto import qr
from emulator.errors import LnemuError
from emulator.stats import group_failures, percentile, wilson_interval

PAYMENT_KINDS = ("invoice", "keysend", "message")
PAYMENT_STATUSES = ("succeeded", "failed")
LATENCY_QUANTILES = (50, 90, 99)
INVOICE_QR_FILE = "invoice_qr.png"
PLOT_FILES = {
    "success_over_time": "success_over_time.png",
    "latency_cdf": "latency_cdf.png",
    "liquidity": "liquidity.png",
    "network": "network.png",
}


class ReportError(LnemuError):
    """Run data that cannot be reported (a bad record) or a report that failed to write."""

    code = "report_error"


@dataclass
class PaymentRecord:
    """One payment the scenario asked for, and how it ended."""

    index: int
    at: float  # seconds since run start, as scheduled
    source: str
    dest: str
    amount_msat: int
    kind: str  # "invoice" | "keysend" | "message"
    status: str  # "succeeded" | "failed"
    latency_s: float | None = None
    fee_msat: int | None = None
    failure: str | None = None
    attempts: int = 1
    parts: int = 1

    def __post_init__(self) -> None:
        if self.kind not in PAYMENT_KINDS:
            raise ReportError(f"payment {self.index}: kind {self.kind!r} not in {PAYMENT_KINDS}")
        if self.status not in PAYMENT_STATUSES:
            raise ReportError(
                f"payment {self.index}: status {self.status!r} not in {PAYMENT_STATUSES}")

    @property
    def succeeded(self) -> bool:
        """Whether the payment reached its destination."""
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready plain data."""
        return asdict(self)


@dataclass
class LiquiditySample:
    """One side of one channel at one moment: how much of it is ``peer``'s to send."""

    t: float  # seconds since run start
    channel: str  # a label such as "alice-bob", or the short channel id
    peer: str  # whose side
    local_msat: int
    capacity_msat: int

    @property
    def share(self) -> float:
        """Outbound share local/capacity (0 for an empty channel)."""
        return self.local_msat / self.capacity_msat if self.capacity_msat > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The sample as JSON-ready plain data."""
        return asdict(self)


@dataclass
class GraphNode:
    """A node of the network graph."""

    name: str
    node_id: str = ""
    role: str = "peer"

    def to_dict(self) -> dict[str, Any]:
        """The node as JSON-ready plain data."""
        return asdict(self)


@dataclass
class GraphChannel:
    """A channel between nodes ``a`` and ``b`` with each side's balance."""

    label: str
    a: str
    b: str
    capacity_sat: int
    a_local_msat: int = 0
    b_local_msat: int = 0
    state: str = "open"

    def share(self, side: str) -> float:
        """Outbound share of side ``"a"`` or ``"b"`` (0 for an empty channel)."""
        capacity_msat = self.capacity_sat * 1000
        local_msat = self.a_local_msat if side == "a" else self.b_local_msat
        return local_msat / capacity_msat if capacity_msat > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The channel as JSON-ready plain data."""
        return asdict(self)


@dataclass
class GraphSnapshot:
    """The network at the end of the run."""

    nodes: list[GraphNode] = field(default_factory=list)
    channels: list[GraphChannel] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GraphSnapshot:
        """Build from ``{"nodes": [{...}], "channels": [{...}]}`` plain data."""
        try:
            return cls([GraphNode(**node) for node in data.get("nodes", [])],
                       [GraphChannel(**chan) for chan in data.get("channels", [])])
        except TypeError as exc:
            raise ReportError(f"bad graph snapshot: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready plain data."""
        return {"nodes": [node.to_dict() for node in self.nodes],
                "channels": [chan.to_dict() for chan in self.channels]}


@dataclass
class RunData:
    """Everything a report is made from, as plain data the runner collects.

    ``invariants`` and ``expectations`` are ``{name, ok, detail}`` dicts (or
    dataclasses with those fields, such as the runner's ``Check``).
    """

    scenario: str
    seed: int
    schedule_digest: str = ""
    started_at: float = 0.0  # unix time
    duration_s: float = 0.0
    payments: list[PaymentRecord] = field(default_factory=list)
    liquidity: list[LiquiditySample] = field(default_factory=list)
    graph: GraphSnapshot = field(default_factory=GraphSnapshot)
    fees_earned_msat: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # {sent, delivered}
    penalties: int = 0
    invariants: list[Any] = field(default_factory=list)
    expectations: list[Any] = field(default_factory=list)
    node_ids: dict[str, str] = field(default_factory=dict)
    invoice: str = ""  # one BOLT 11 invoice the run paid, shown with its QR code
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The whole run as JSON-ready plain data."""
        data = {name: getattr(self, name) for name in
                ("scenario", "seed", "schedule_digest", "started_at", "duration_s",
                 "fees_earned_msat", "messages", "penalties", "node_ids", "invoice",
                 "extra")}
        data["payments"] = [p.to_dict() for p in self.payments]
        data["liquidity"] = [s.to_dict() for s in self.liquidity]
        data["graph"] = self.graph.to_dict()
        data["invariants"] = [check_dict(c) for c in self.invariants]
        data["expectations"] = [check_dict(c) for c in self.expectations]
        return data


def check_dict(check: Any) -> dict[str, Any]:
    """A check (dict or dataclass with name, ok, detail) as a plain dict."""
    plain = asdict(check) if is_dataclass(check) and not isinstance(check, type) else check
    if not isinstance(plain, Mapping) or "name" not in plain or "ok" not in plain:
        raise ReportError(f"a check needs name and ok, got {check!r}")
    return {"name": str(plain["name"]), "ok": bool(plain["ok"]),
            "detail": str(plain.get("detail", ""))}


# --- summary ---------------------------------------------------------------------

def payment_counts(payments: list[PaymentRecord]) -> dict[str, Any]:
    """Attempted/succeeded/failed, success rate with its 95% Wilson CI."""
    attempted = len(payments)
    succeeded = sum(1 for p in payments if p.succeeded)
    low, high = wilson_interval(succeeded, attempted)
    return {"attempted": attempted, "succeeded": succeeded, "failed": attempted - succeeded,
            "success_rate": succeeded / attempted if attempted else None,
            "success_rate_ci95": [low, high]}


def latency_summary(payments: list[PaymentRecord]) -> dict[str, Any]:
    """Latency percentiles (seconds) over succeeded payments; None when there are none."""
    values = [p.latency_s for p in payments if p.succeeded and p.latency_s is not None]
    summary: dict[str, Any] = {"count": len(values)}
    for q in LATENCY_QUANTILES:
        summary[f"p{q}"] = percentile(values, q) if values else None
    summary["max"] = max(values) if values else None
    return summary


def fees_paid(payments: list[PaymentRecord]) -> dict[str, int]:
    """Routing fees each source paid on its succeeded payments (msat)."""
    paid: dict[str, int] = {}
    for p in payments:
        if p.succeeded and p.fee_msat:
            paid[p.source] = paid.get(p.source, 0) + p.fee_msat
    return dict(sorted(paid.items()))


def by_kind(payments: list[PaymentRecord]) -> dict[str, dict[str, int]]:
    """Attempted/succeeded/failed per payment kind that occurs."""
    counts: dict[str, dict[str, int]] = {}
    for p in payments:
        row = counts.setdefault(p.kind, {"attempted": 0, "succeeded": 0, "failed": 0})
        row["attempted"] += 1
        row["succeeded" if p.succeeded else "failed"] += 1
    return counts


def summarize(data: RunData, files: Mapping[str, str]) -> dict[str, Any]:
    """The content of ``summary.json``; ``files`` maps names to paths in the run dir."""
    invariants = [check_dict(c) for c in data.invariants]
    expectations = [check_dict(c) for c in data.expectations]
    payments = payment_counts(data.payments)
    payments["by_kind"] = by_kind(data.payments)
    payments["attempts"] = sum(p.attempts for p in data.payments)
    payments["multi_part"] = sum(1 for p in data.payments if p.parts > 1)
    payments["failures_by_reason"] = group_failures(
        p.failure for p in data.payments if not p.succeeded)
    paid = fees_paid(data.payments)
    return {
        "scenario": data.scenario, "seed": data.seed,
        "schedule_digest": data.schedule_digest,
        "started_at": data.started_at, "duration_s": data.duration_s,
        "ok": all(c["ok"] for c in invariants + expectations),
        "node_ids": dict(data.node_ids),
        "payments": payments,
        "latency_s": latency_summary(data.payments),
        "fees": {"paid_msat": paid, "paid_total_msat": sum(paid.values()),
                 "earned_msat": dict(sorted(data.fees_earned_msat.items())),
                 "earned_total_msat": sum(data.fees_earned_msat.values())},
        "messages": {"sent": data.messages.get("sent", 0),
                     "delivered": data.messages.get("delivered", 0)},
        "penalties": data.penalties,
        "invariants": invariants,
        "expectations": expectations,
        "files": dict(files),
        "extra": data.extra,
    }


# --- writing ---------------------------------------------------------------------

def write_report(run_dir: Path, data: RunData) -> dict[str, Path]:
    """Write the plots, ``report.md`` and ``summary.json``; return their paths by name."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: run_dir / filename for name, filename in PLOT_FILES.items()}
    _draw_plots(paths, data)
    if data.invoice:
        paths["invoice_qr"] = _write_invoice_qr(run_dir / INVOICE_QR_FILE, data.invoice)
    files = {name: path.name for name, path in paths.items()}
    files["report"] = "report.md"
    files["summary"] = "summary.json"
    summary = summarize(data, files)
    paths["report"] = run_dir / files["report"]
    paths["report"].write_text(render_markdown(data, summary), encoding="utf-8")
    paths["summary"] = run_dir / files["summary"]
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                encoding="utf-8")
    return paths


def _write_invoice_qr(path: Path, bolt11: str) -> Path:
    """The QR code a wallet scans for ``bolt11`` (``LIGHTNING:`` + the upper-case invoice)."""
    try:
        return qr.write_png(qr.invoice_qr_payload(bolt11), path, scale=6)
    except (OSError, ValueError) as exc:
        raise ReportError(f"invoice QR code {path.name} failed: {exc}") from exc


def _draw_plots(paths: Mapping[str, Path], data: RunData) -> None:
    """Draw the four plots, naming the one that failed in a ReportError."""
    drawings = {
        "success_over_time": lambda path: plots.plot_success_over_time(
            [(p.at, p.succeeded) for p in data.payments], path),
        "latency_cdf": lambda path: plots.plot_latency_cdf(
            [p.latency_s for p in data.payments if p.succeeded and p.latency_s is not None],
            path),
        "liquidity": lambda path: plots.plot_liquidity(
            [(s.t, s.channel, s.peer, s.share) for s in data.liquidity], path),
        "network": lambda path: plots.plot_network(data.graph, path, seed=data.seed),
    }
    for name, draw in drawings.items():
        try:
            draw(paths[name])
        except (OSError, ValueError, RuntimeError) as exc:
            raise ReportError(f"plot {paths[name].name} failed: {exc}") from exc




# --- report.md -------------------------------------------------------------------

def render_markdown(data: RunData, summary: Mapping[str, Any]) -> str:
    """The text of ``report.md`` for a run and its summary."""
    sections = [_md_header(data, summary), _md_results(summary), _md_latency(summary),
                _md_failures(summary), _md_fees(summary), _md_liquidity(summary),
                _md_network(data, summary)]
    if "invoice_qr" in summary["files"]:
        sections.append(_md_invoice(data.invoice, summary["files"]["invoice_qr"]))
    sections += [_md_checklist("Invariants", summary["invariants"]),
                 _md_checklist("Expectations", summary["expectations"])]
    return "\n\n".join(sections) + "\n"


def _md_header(data: RunData, summary: Mapping[str, Any]) -> str:
    verdict = "✅ passed" if summary["ok"] else "❌ failed"
    rows = [("scenario", f"`{data.scenario}`"), ("seed", f"`{data.seed}`"),
            ("schedule digest", f"`{data.schedule_digest or '-'}`"),
            ("started", format_time(data.started_at)),
            ("duration", f"{data.duration_s:.1f} s"), ("verdict", f"**{verdict}**")]
    return f"# lnemu run report: {_md_escape(data.scenario)}\n\n" + _md_table(("run", ""), rows)


def _md_results(summary: Mapping[str, Any]) -> str:
    pay, msgs = summary["payments"], summary["messages"]
    rows = [("payments attempted", f"{pay['attempted']:,}"),
            ("succeeded", f"{pay['succeeded']:,}"), ("failed", f"{pay['failed']:,}"),
            ("success rate (95% CI)", format_rate(pay["success_rate"], pay["success_rate_ci95"])),
            ("payment attempts (incl. retries)", f"{pay['attempts']:,}"),
            ("multi-part payments", f"{pay['multi_part']:,}"),
            ("fees paid", f"{summary['fees']['paid_total_msat']:,} msat"),
            ("fees earned", f"{summary['fees']['earned_total_msat']:,} msat"),
            ("messages sent / delivered", f"{msgs['sent']:,} / {msgs['delivered']:,}"),
            ("penalties", f"{summary['penalties']:,}")]
    text = "## Results\n\n" + _md_table(("metric", "value"), rows)
    if pay["by_kind"]:
        kinds = [(kind, f"{row['attempted']:,}", f"{row['succeeded']:,}", f"{row['failed']:,}")
                 for kind, row in sorted(pay["by_kind"].items())]
        text += "\n\n" + _md_table(("kind", "attempted", "succeeded", "failed"), kinds)
    return text + "\n\n" + _md_image("Payments over time", summary["files"]["success_over_time"])


def _md_latency(summary: Mapping[str, Any]) -> str:
    latency = summary["latency_s"]
    if not latency["count"]:
        body = "No payment succeeded, so there is no latency to show."
    else:
        cells = [format_ms(latency[f"p{q}"]) for q in LATENCY_QUANTILES]
        body = (f"Over {latency['count']:,} succeeded payments:\n\n"
                + _md_table([f"p{q}" for q in LATENCY_QUANTILES] + ["max"],
                            [cells + [format_ms(latency["max"])]]))
    return ("## Latency\n\n" + body + "\n\n"
            + _md_image("Latency CDF", summary["files"]["latency_cdf"]))


def _md_failures(summary: Mapping[str, Any]) -> str:
    reasons = summary["payments"]["failures_by_reason"]
    if not reasons:
        return "## Failures by reason\n\nNo payment failed."
    total = sum(reasons.values())
    rows = [(f"`{_md_escape(reason)}`", f"{count:,}", f"{count / total:.0%}")
            for reason, count in reasons.items()]
    return ("## Failures by reason\n\nIds and numbers are replaced by `<id>`, `<scid>`"
            " and `<n>` so that alike failures group.\n\n"
            + _md_table(("reason", "count", "share"), rows))


def _md_fees(summary: Mapping[str, Any]) -> str:
    paid, earned = summary["fees"]["paid_msat"], summary["fees"]["earned_msat"]
    peers = sorted(set(paid) | set(earned))
    if not peers:
        return "## Fees\n\nNo routing fees were paid or earned."
    rows = [(_md_escape(peer), f"{paid.get(peer, 0):,}", f"{earned.get(peer, 0):,}")
            for peer in peers]
    return "## Fees\n\n" + _md_table(("peer", "paid (msat)", "earned (msat)"), rows)


def _md_liquidity(summary: Mapping[str, Any]) -> str:
    return ("## Liquidity\n\nEach line is one side of one channel: the share of the "
            "capacity that side can send.\n\n"
            + _md_image("Outbound liquidity over time", summary["files"]["liquidity"]))


def _md_network(data: RunData, summary: Mapping[str, Any]) -> str:
    text = ("## Network\n\nEdge width grows with capacity; the percentages near each "
            "end are that side's share of the balance.\n\n"
            + _md_image("Network graph", summary["files"]["network"]))
    roles = {node.name: node.role for node in data.graph.nodes}
    ids = dict(data.node_ids)
    for node in data.graph.nodes:
        ids.setdefault(node.name, node.node_id)
    if ids:
        rows = [(_md_escape(name), _md_escape(roles.get(name, "-")), f"`{node_id or '-'}`")
                for name, node_id in sorted(ids.items())]
        text += "\n\n" + _md_table(("node", "role", "node id"), rows)
    return text


def _md_invoice(bolt11: str, qr_file: str) -> str:
    """The first invoice the run paid: the string, what it says, and its QR code."""
    text = ("## Invoice\n\nA BOLT 11 invoice this run paid, as any wallet reads it; the "
            "QR code holds `LIGHTNING:` and the invoice in upper case (BOLT 11 asks for "
            "upper case in QR codes: it fits the denser alphanumeric mode).\n\n"
            f"```\n{bolt11}\n```")
    try:
        inv = bolt11_codec.decode(bolt11)
    except bolt11_codec.Bolt11Error as exc:
        text += f"\n\nIt does not decode: {_md_escape(str(exc))}"
    else:
        amount = f"{inv.amount_msat:,} msat" if inv.amount_msat is not None else "any"
        rows = [("amount", amount), ("description", _md_escape(inv.description or "-")),
                ("payee", f"`{inv.payee.hex() if inv.payee else '-'}`"),
                ("payment hash", f"`{inv.payment_hash.hex()}`"),
                ("created", format_time(inv.timestamp)), ("expiry", f"{inv.expiry} s"),
                ("min final CLTV delta", f"{inv.min_final_cltv_expiry_delta} blocks")]
        text += "\n\n" + _md_table(("field", "value"), rows)
    return text + "\n\n" + _md_image("Invoice QR code", qr_file)


def _md_checklist(title: str, checks: list[Mapping[str, Any]]) -> str:
    if not checks:
        return f"## {title}\n\nNone checked."
    lines = [f"- {'✅' if c['ok'] else '❌'} **{_md_escape(c['name'])}**"
             + (f" — {_md_escape(c['detail'])}" if c["detail"] else "") for c in checks]
    return f"## {title}\n\n" + "\n".join(lines)


def _md_table(header: Any, rows: Any) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_image(alt: str, filename: str) -> str:
    return f"![{alt}]({filename})"


def _md_escape(text: str) -> str:
    """Keep table cells whole: pipes and newlines would break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_rate(rate: float | None, ci: list[float]) -> str:
    """``80.0% (66.9%–88.8%)``, or ``-`` when nothing was attempted."""
    if rate is None:
        return "- (no payments)"
    return f"{rate:.1%} ({ci[0]:.1%}–{ci[1]:.1%})"


def format_ms(seconds: float | None) -> str:
    """Seconds as milliseconds with sensible precision (``-`` for None)."""
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:,.1f} ms" if ms < 1000 else f"{ms:,.0f} ms"


def format_time(unix: float) -> str:
    """A unix time as ``YYYY-MM-DD HH:MM:SS UTC`` (``-`` for 0)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix)) if unix else "-"
