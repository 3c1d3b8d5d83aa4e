"""PNG plots for run reports, drawn with matplotlib's Agg canvas.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never
``pyplot``, so drawing touches no global backend state and needs no display. Every
plot takes plain numbers and writes one titled, labelled PNG at 100 dpi.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from emulator.stats import percentile, wilson_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from emulator.reporting import GraphChannel, GraphSnapshot

DPI = 100
SUCCESS_COLOUR = "#2ca02c"
FAILURE_COLOUR = "#d62728"
MAX_LEGEND_LINES = 16
MAX_EDGE_LABELS = 40
GRAVITY = 0.1
CLOSED_STATE_WORDS = ("clos", "force", "punish", "redeem", "onchain")


def _new_figure(width_in: float = 8.0, height_in: float = 5.0) -> Figure:
    """A figure with constrained layout on its own Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG and return the path."""
    path = Path(path)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _plural(count: int, noun: str) -> str:
    """``1 node``, ``2 nodes``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _note(ax: Axes, text: str) -> None:
    """A grey centred note, for plots with nothing to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            fontsize=13, color="0.4")


# --- payments over time ----------------------------------------------------------

def plot_success_over_time(outcomes: Sequence[tuple[float, bool]], path: Path) -> Path:
    """Successes/failures per time bucket and the cumulative success rate with its CI."""
    fig = _new_figure(9.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    fig.suptitle("Payments over time")
    bottom.set_xlabel("time since start (s)")
    bottom.set_ylabel("cumulative success rate")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0))
    bottom.set_ylim(0, 1.05)
    if not outcomes:
        top.set_ylabel("payments per bucket")
        _note(top, "no payments in this run")
        return _save(fig, path)
    ordered = sorted(outcomes)
    times = np.array([t for t, _ in ordered], dtype=float)
    ok = np.array([succeeded for _, succeeded in ordered], dtype=bool)
    end = float(times.max()) if times.max() > 0 else 1.0
    _draw_buckets(top, times, ok, end)
    _draw_cumulative_rate(bottom, times, ok, end)
    return _save(fig, path)


def _draw_buckets(ax: Axes, times: np.ndarray, ok: np.ndarray, end: float) -> None:
    """Stacked bars of succeeded and failed payments per time bucket."""
    buckets = int(min(40, max(5, math.ceil(math.sqrt(len(times))))))
    edges = np.linspace(0.0, end * (1 + 1e-9), buckets + 1)
    succeeded, _ = np.histogram(times[ok], bins=edges)
    failed, _ = np.histogram(times[~ok], bins=edges)
    width = edges[1] - edges[0]
    ax.bar(edges[:-1], succeeded, width=width, align="edge", color=SUCCESS_COLOUR,
           edgecolor="white", label=f"succeeded ({int(ok.sum())})")
    ax.bar(edges[:-1], failed, width=width, align="edge", bottom=succeeded,
           color=FAILURE_COLOUR, edgecolor="white", label=f"failed ({int((~ok).sum())})")
    ax.set_ylabel(f"payments per {width:.3g} s")
    ax.set_ylim(0, max(int((succeeded + failed).max()), 1) * 1.3)  # room for the legend
    ax.legend(loc="upper center", ncol=2)
    ax.grid(axis="y", alpha=0.3)


def _draw_cumulative_rate(ax: Axes, times: np.ndarray, ok: np.ndarray, end: float) -> None:
    """Cumulative success rate by scheduled time, with a 95% Wilson band, held to ``end``."""
    wins, count = np.cumsum(ok), np.arange(1, len(ok) + 1)
    # one point per distinct time (after all payments scheduled then), then hold to the end
    last = np.r_[times[1:] != times[:-1], True]
    xs = np.r_[times[last], end]
    wins, count = np.r_[wins[last], wins[-1]], np.r_[count[last], count[-1]]
    bounds = np.array([wilson_interval(int(w), int(n)) for w, n in zip(wins, count, strict=True)])
    ax.fill_between(xs, bounds[:, 0], bounds[:, 1], step="post", color="tab:blue",
                    alpha=0.2, label="95% Wilson CI")
    ax.step(xs, wins / count, where="post", color="tab:blue", label="success rate")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)


# --- latency ---------------------------------------------------------------------

def plot_latency_cdf(latencies_s: Sequence[float], path: Path) -> Path:
    """Empirical CDF of succeeded payments' latency in ms, marking p50/p90/p99."""
    fig = _new_figure()
    ax = fig.subplots()
    ax.set_title("Payment latency (succeeded payments)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of payments")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.02)
    if not latencies_s:
        _note(ax, "no payment succeeded: no latency to show")
        return _save(fig, path)
    ms = np.sort(np.asarray(latencies_s, dtype=float) * 1000)
    fraction = np.arange(1, len(ms) + 1) / len(ms)
    ax.step(np.concatenate(([ms[0]], ms)), np.concatenate(([0.0], fraction)),
            where="post", color="tab:blue", label=f"{len(ms)} payments")
    if ms[0] > 0 and ms[-1] / ms[0] > 50:
        ax.set_xscale("log")
    for q, colour in ((50, "tab:green"), (90, "tab:orange"), (99, "tab:red")):
        value = percentile(list(ms), q)
        ax.axvline(value, color=colour, linestyle="--", linewidth=1,
                   label=f"p{q} = {value:,.1f} ms")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --- liquidity -------------------------------------------------------------------

def plot_liquidity(samples: Sequence[tuple[float, str, str, float]], path: Path) -> Path:
    """Outbound share local/capacity over time, one line per (channel, side)."""
    fig = _new_figure(10.0, 5.5)
    ax = fig.subplots()
    ax.set_title("Outbound liquidity per channel side")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("local / capacity")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(-0.02, 1.02)
    if not samples:
        _note(ax, "no liquidity samples in this run")
        return _save(fig, path)
    lines: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for t, channel, peer, share in samples:
        lines[(channel, peer)].append((t, share))
    channels = sorted({channel for channel, _ in lines})
    palette = colormaps["tab10" if len(channels) <= 10 else "tab20"]
    few = len(lines) <= MAX_LEGEND_LINES
    for (channel, peer), points in sorted(lines.items()):
        index = channels.index(channel)
        first_side = peer == min(p for c, p in lines if c == channel)
        points.sort()
        ax.step([t for t, _ in points], [s for _, s in points], where="post",
                color=palette(index % palette.N), linestyle="-" if first_side else "--",
                linewidth=1.6 if few else 0.6, alpha=1.0 if few else 0.25,
                label=f"{channel}: {peer}")
    if few:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
                  title="channel: side")
    else:
        _draw_share_band(ax, list(lines.values()))
        _note_corner(ax, f"{len(lines)} channel sides; faint lines are single sides")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _draw_share_band(ax: Axes, lines: list[list[tuple[float, float]]]) -> None:
    """Median and 10-90th percentile of all sides' shares, each held since its last sample."""
    grid = np.unique([t for points in lines for t, _ in points])
    values = np.full((len(lines), len(grid)), np.nan)
    for row, points in enumerate(lines):
        times = np.array([t for t, _ in points])
        shares = np.array([share for _, share in points])
        index = np.searchsorted(times, grid, side="right") - 1
        values[row] = np.where(index >= 0, shares[np.maximum(index, 0)], np.nan)
    low, median, high = np.nanpercentile(values, [10, 50, 90], axis=0)
    band = ax.fill_between(grid, low, high, step="post", color="tab:blue", alpha=0.25,
                           label="10th-90th percentile")
    (line,) = ax.step(grid, median, where="post", color="black", linewidth=2, label="median")
    ax.legend(handles=[line, band], loc="lower left", fontsize=8)


def _note_corner(ax: Axes, text: str) -> None:
    """A small note in the top-right corner."""
    ax.text(0.99, 0.98, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            color="0.3", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})


# --- network ---------------------------------------------------------------------

def circle_layout(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Nodes evenly on the unit circle, the first at the top."""
    count = max(len(names), 1)
    return {name: (math.sin(2 * math.pi * i / count), math.cos(2 * math.pi * i / count))
            for i, name in enumerate(names)}


def spring_layout(names: Sequence[str], edges: Sequence[tuple[str, str]], seed: int = 0,
                  iterations: int = 200) -> dict[str, tuple[float, float]]:
    """Fruchterman-Reingold positions in [-1, 1]², deterministic for a given seed."""
    if len(names) < 2:
        return {name: (0.0, 0.0) for name in names}
    index = {name: i for i, name in enumerate(names)}
    adjacency = np.zeros((len(names), len(names)))
    for a, b in edges:
        if a in index and b in index and a != b:
            adjacency[index[a], index[b]] = adjacency[index[b], index[a]] = 1.0
    rng = np.random.default_rng(seed)
    pos = np.array(list(circle_layout(names).values())) + rng.normal(0, 0.05, (len(names), 2))
    ideal = 1.0 / math.sqrt(len(names))
    for step in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        distance = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = ideal * ideal / distance**2 - adjacency * distance / ideal
        # gravity keeps lone nodes and separate components from drifting off, which
        # would shrink everything else to a dot when the layout is rescaled
        displacement = np.einsum("ijk,ij->ik", delta, force) - GRAVITY * pos
        length = np.maximum(np.linalg.norm(displacement, axis=-1), 1e-9)
        temperature = 0.1 * (1 - step / iterations)
        pos += displacement * (np.minimum(length, temperature) / length)[:, None]
    pos -= pos.mean(axis=0)
    pos /= max(float(np.abs(pos).max()), 1e-9)
    return {name: (float(x), float(y)) for name, (x, y) in zip(names, pos, strict=True)}


def network_layout(names: Sequence[str], edges: Sequence[tuple[str, str]], seed: int = 0
                   ) -> dict[str, tuple[float, float]]:
    """Spring layout of the nodes with channels; nodes without any in a row beneath."""
    linked = {n for edge in edges for n in edge}
    connected = [name for name in names if name in linked]
    alone = [name for name in names if name not in linked]
    if not connected:
        return circle_layout(alone) if len(alone) > 1 else {n: (0.0, 0.0) for n in alone}
    pos = spring_layout(connected, edges, seed=seed)
    row_y = min(y for _, y in pos.values()) - 0.5
    row_xs = np.linspace(-0.8, 0.8, len(alone)) if len(alone) > 1 else [0.0]
    pos.update({name: (float(x), row_y) for name, x in zip(alone, row_xs, strict=False)})
    return pos


def plot_network(graph: GraphSnapshot, path: Path, seed: int = 0) -> Path:
    """The channel graph: edge width by capacity, colour by how even the balance is."""
    names = [node.name for node in graph.nodes]
    names += sorted({n for c in graph.channels for n in (c.a, c.b)} - set(names))
    large = len(names) > 30
    fig = _new_figure(11.0 if large else 8.5, 8.5 if large else 6.5)
    ax = fig.subplots()
    ax.set_title(f"Network: {_plural(len(names), 'node')}, "
                 f"{_plural(len(graph.channels), 'channel')}")
    ax.set_axis_off()
    if not names:
        _note(ax, "no nodes in this run")
        return _save(fig, path)
    pos = network_layout(names, [(c.a, c.b) for c in graph.channels], seed=seed)
    _draw_edges(fig, ax, graph.channels, pos)
    _draw_nodes(ax, graph, names, pos, large)
    _fit_limits(ax, pos)
    return _save(fig, path)


def _fit_limits(ax: Axes, pos: dict[str, tuple[float, float]]) -> None:
    """Axis limits around the nodes, with room for labels, keeping circles round."""
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    half = max(max(xs) - min(xs), max(ys) - min(ys), 0.5) / 2 + 0.2
    centre_x, centre_y = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    ax.set_xlim(centre_x - half * 1.3, centre_x + half * 1.3)  # the figure is wider than tall
    ax.set_ylim(centre_y - half, centre_y + half)


def _is_closed(channel: GraphChannel) -> bool:
    """Whether the channel's state reads as closing or closed."""
    state = channel.state.lower()
    return any(word in state for word in CLOSED_STATE_WORDS)


def balance_evenness(channel: GraphChannel) -> float:
    """1 when both sides hold the same, 0 when one side holds everything."""
    total = channel.a_local_msat + channel.b_local_msat
    return 2 * min(channel.a_local_msat, channel.b_local_msat) / total if total > 0 else 0.0


def _edge_ends(channels: Sequence[GraphChannel], pos: dict[str, tuple[float, float]]
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each channel's two end points, parallel channels offset side by side."""
    groups: dict[frozenset[str], list[int]] = defaultdict(list)
    for i, channel in enumerate(channels):
        groups[frozenset((channel.a, channel.b))].append(i)
    ends: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(2), np.zeros(2))] * len(channels)
    for members in groups.values():
        for rank, i in enumerate(members):
            a, b = np.array(pos[channels[i].a]), np.array(pos[channels[i].b])
            direction = b - a
            normal = np.array([-direction[1], direction[0]]) / max(np.linalg.norm(direction),
                                                                   1e-9)
            offset = normal * 0.05 * (rank - (len(members) - 1) / 2)
            ends[i] = (a + offset, b + offset)
    return ends


def _draw_edges(fig: Figure, ax: Axes, channels: Sequence[GraphChannel],
                pos: dict[str, tuple[float, float]]) -> None:
    """Channels as lines, width by capacity, colour by balance evenness, shares at ends."""
    if not channels:
        return
    cmap, norm = colormaps["RdYlGn"], Normalize(0.0, 1.0)
    biggest = max(max(c.capacity_sat for c in channels), 1)
    label_shares = len(channels) <= MAX_EDGE_LABELS
    for channel, (a, b) in zip(channels, _edge_ends(channels, pos), strict=True):
        width = 1.0 + 7.0 * channel.capacity_sat / biggest
        if _is_closed(channel):
            ax.plot(*zip(a, b, strict=True), color="0.6", linestyle=":", linewidth=width,
                    zorder=1, solid_capstyle="round")
            continue
        ax.plot(*zip(a, b, strict=True), color=cmap(norm(balance_evenness(channel))),
                linewidth=width, zorder=1, solid_capstyle="round")
        if label_shares:
            _label_shares(ax, channel, a, b)
    colour_bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6,
                              pad=0.01)
    colour_bar.set_label("balance evenness (1 = even, 0 = all on one side)")


def _label_shares(ax: Axes, channel: GraphChannel, a: np.ndarray, b: np.ndarray) -> None:
    """Each side's outbound share written near its own end of the edge."""
    for share, point in ((channel.share("a"), a + (b - a) * 0.3),
                         (channel.share("b"), b + (a - b) * 0.3)):
        ax.text(point[0], point[1], f"{share:.0%}", ha="center", va="center", fontsize=8,
                zorder=3, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                                "edgecolor": "0.7", "alpha": 0.85})


def _draw_nodes(ax: Axes, graph: GraphSnapshot, names: Sequence[str],
                pos: dict[str, tuple[float, float]], large: bool) -> None:
    """Nodes as circles coloured by role, with their names."""
    roles = {node.name: node.role for node in graph.nodes}
    role_names = sorted({roles.get(name, "peer") for name in names})
    palette = colormaps["tab10"]
    for r, role in enumerate(role_names):
        members = [name for name in names if roles.get(name, "peer") == role]
        ax.scatter([pos[n][0] for n in members], [pos[n][1] for n in members],
                   s=80 if large else 450, color=palette(r % palette.N), edgecolors="black",
                   linewidths=1.0, zorder=4, label=role)
    for name in names:
        ax.annotate(name, pos[name], xytext=(0, -9 if large else -19), textcoords="offset points",
                    ha="center", va="top", fontsize=7 if large else 10, zorder=5,
                    fontweight="bold", bbox={"boxstyle": "round,pad=0.1", "facecolor": "white",
                                             "edgecolor": "none", "alpha": 0.7})
    if len(role_names) > 1:
        ax.legend(loc="lower left", title="role", fontsize=8, markerscale=0.5)
