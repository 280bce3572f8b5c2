"""Server-drawn SVG figures of sweeps and pipelines: a scatter of one parameter against the metric,
parallel coordinates of several parameters and the metric, and a pipeline's steps as a graph.

Pure functions of their data, no script: each answers an <svg class="figure"> with role="img", an
aria-label and a <title> (or, without data, a <p> with the same id saying so). Every text they carry
is escaped; numbers are formatted here, never taken as markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from cible.server.studio import charts
from cible.server.studio.charts import FILLS, state_class

INK, MUTED, LINE, ACCENT = "#1f2328", "#57606a", "#d0d7de", "#0550ae"
TRIAL = "#8c959f"
BEST = "#1a7f37"


def _open(element_id: str, label: str, width: int, height: int) -> list[str]:
    start = (f'<svg class="figure" id="{escape(element_id)}" role="img" aria-label="{escape(label)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">')
    return [start, f"<title>{escape(label)}</title>"]


def _empty(element_id: str, text: str) -> str:
    return f'<p id="{escape(element_id)}" class="muted">{escape(text)}</p>'


def number(value: Any) -> str:
    """A value as a figure shows it: short, exact enough to tell trials apart."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Axis:
    """One vertical (or horizontal) scale: numeric from its values' range, or categories in order of
    appearance (a `choice` of strings, booleans, or mixed values)."""

    name: str
    values: list[Any]
    categories: list[str] = field(default_factory=list)
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        present = [v for v in self.values if v is not None]
        if present and all(_numeric(v) for v in present):
            self.low, self.high = min(present), max(present)
        else:
            for v in present:
                if str(v) not in self.categories:
                    self.categories.append(str(v))

    def at(self, value: Any) -> float | None:
        """Where `value` falls, 0 (low) to 1 (high); None for no value."""
        if value is None:
            return None
        if self.categories:
            if str(value) not in self.categories:
                return None
            n = len(self.categories)
            return 0.5 if n == 1 else self.categories.index(str(value)) / (n - 1)
        if not _numeric(value):
            return None
        if self.high == self.low:
            return 0.5
        return (value - self.low) / (self.high - self.low)

    def ticks(self) -> list[tuple[float, str]]:
        if self.categories:
            n = len(self.categories)
            return [(0.5 if n == 1 else i / (n - 1), c) for i, c in enumerate(self.categories)]
        if not any(v is not None for v in self.values):
            return []
        if self.high == self.low:
            return [(0.5, number(self.low))]
        return [(0.0, number(self.low)), (1.0, number(self.high))]


# ---- scatter: one parameter against the metric ------------------------------------------------


def scatter(points: Sequence[tuple[str, Any, Any]], *, x_label: str, y_label: str, label: str, element_id: str,
            best: str | None = None, width: int = 720, height: int = 380) -> str:
    """One dot per (name, x, y); the `best` one larger, in green, and named. Points without a y are
    left out (a trial that logged no metric yet)."""
    shown = [(n, x, y) for n, x, y in points if _numeric(y) and x is not None]
    if not shown:
        return _empty(element_id, "No trial has reported its metric yet.")
    left, right, top, bottom = 70, 20, 16, 52
    pw, ph = width - left - right, height - top - bottom
    xa = Axis(x_label, [x for _, x, _ in shown])
    ya = Axis(y_label, [y for _, _, y in shown])
    parts = _open(element_id, label, width, height)
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="{LINE}"/>')
    for pos, text in xa.ticks():
        x = left + pw * pos
        parts.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="{MUTED}"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 18}" font-size="11" fill="{MUTED}" text-anchor="middle">'
                     f"{escape(charts.short(text, 14))}</text>")
    for pos, text in ya.ticks():
        y = top + ph * (1 - pos)
        parts.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="{MUTED}"/>'
                     f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" fill="{MUTED}" text-anchor="end">'
                     f"{escape(charts.short(text, 10))}</text>")
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" font-size="12" fill="{INK}" text-anchor="middle">'
                 f"{escape(x_label)}</text>")
    parts.append(f'<text x="14" y="{top + ph / 2:.1f}" font-size="12" fill="{INK}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(y_label)}</text>')
    # A small jitter-free inset so dots at the ends of the range are not cut by the frame.
    inset = 8
    for name, xv, yv in sorted(shown, key=lambda p: p[0] == best):
        x = left + inset + (pw - 2 * inset) * (xa.at(xv) or 0)
        y = top + inset + (ph - 2 * inset) * (1 - (ya.at(yv) or 0))
        is_best = name == best
        tip = f"{name}: {x_label}={number(xv)}, {y_label}={number(yv)}" + (" (best)" if is_best else "")
        mark = ' class="best"' if is_best else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{7 if is_best else 4.5}" '
                     f'fill="{BEST if is_best else ACCENT}" fill-opacity="{1 if is_best else 0.7}" '
                     f'stroke="#fff" stroke-width="1"{mark}>'
                     f"<title>{escape(tip)}</title></circle>")
        if is_best:
            parts.append(f'<text x="{x + 10:.1f}" y="{y - 8:.1f}" font-size="12" font-weight="600" fill="{BEST}">'
                         f"best: {escape(charts.short(name, 30))}</text>")
    parts.append("</svg>")
    return "".join(parts)


# ---- parallel coordinates: several parameters and the metric ----------------------------------


def parallel_coordinates(axes: Sequence[str], rows: Sequence[tuple[str, Mapping[str, Any]]], *, label: str,
                         element_id: str, best: str | None = None, width: int = 900, height: int = 380) -> str:
    """One vertical axis per name in `axes` (the last one is usually the metric), one polyline per
    (name, values) row through its values; the `best` row drawn last, thick and green. A row lacking
    a value breaks its line there."""
    if not axes or not rows:
        return _empty(element_id, "No trials yet.")
    left, right, top, bottom = 60, 60, 30, 46
    pw, ph = width - left - right, height - top - bottom
    scales = [Axis(a, [values.get(a) for _, values in rows]) for a in axes]
    gap = pw / max(len(axes) - 1, 1)
    xs = [left + (gap * i if len(axes) > 1 else pw / 2) for i in range(len(axes))]
    parts = _open(element_id, label, width, height)
    for x, scale in zip(xs, scales):
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="{MUTED}" stroke-width="1"/>')
        parts.append(f'<text x="{x:.1f}" y="{top - 12}" font-size="12" font-weight="600" fill="{INK}" '
                     f'text-anchor="middle">{escape(charts.short(scale.name, 24))}</text>')
        for pos, text in scale.ticks():
            y = top + ph * (1 - pos)
            parts.append(f'<text x="{x + 5:.1f}" y="{y + 4:.1f}" font-size="11" fill="{MUTED}">'
                         f"{escape(charts.short(text, 12))}</text>")
    for name, values in sorted(rows, key=lambda r: r[0] == best):
        is_best = name == best
        segments: list[list[str]] = [[]]
        for x, scale in zip(xs, scales):
            pos = scale.at(values.get(scale.name))
            if pos is None:
                segments.append([])
                continue
            segments[-1].append(f"{x:.1f},{top + ph * (1 - pos):.1f}")
        tip = f"{name}: " + ", ".join(f"{a}={number(values.get(a)) if values.get(a) is not None else '—'}"
                                      for a in axes) + (" (best)" if is_best else "")
        drawn = [s for s in segments if s]
        if not drawn:
            continue
        stroke = (f'stroke="{BEST}" stroke-width="3.5" class="best"' if is_best
                  else f'stroke="{TRIAL}" stroke-width="1.5" stroke-opacity="0.8"')
        parts.append("<g>" + f"<title>{escape(tip)}</title>" + "".join(
            f'<polyline points="{" ".join(s)}" fill="none" {stroke}/>' if len(s) > 1 else
            f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="3" fill="{BEST if is_best else TRIAL}"/>'
            for s in drawn) + "</g>")
    if best is not None and any(n == best for n, _ in rows):
        parts.append(f'<line x1="{left}" y1="{height - 14}" x2="{left + 24}" y2="{height - 14}" stroke="{TRIAL}" '
                     f'stroke-width="1.5"/><text x="{left + 30}" y="{height - 10}" font-size="12" fill="{INK}">'
                     "other trials</text>")
        parts.append(f'<line x1="{left + 130}" y1="{height - 14}" x2="{left + 154}" y2="{height - 14}" '
                     f'stroke="{BEST}" stroke-width="3.5"/><text x="{left + 160}" y="{height - 10}" font-size="12" '
                     f'fill="{INK}">best trial: {escape(charts.short(best, 60))}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---- a pipeline's steps as a graph -------------------------------------------------------------


def layers(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: 0 for a node nothing leads to, else one more than the furthest node
    before it. Edges naming unknown nodes are ignored; a cycle (refused by the pipeline model) does
    not loop here."""
    known = set(nodes)
    before: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in known and b in known and a != b:
            before[b].append(a)
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(node: str) -> int:
        if node in depth:
            return depth[node]
        if node in visiting:
            return 0
        visiting.add(node)
        depth[node] = max((visit(p) + 1 for p in before[node]), default=0)
        visiting.discard(node)
        return depth[node]

    for node in nodes:
        visit(node)
    return depth


def _lanes(spans: Sequence[tuple[int, int]]) -> list[int]:
    """A lane for each closed interval of gaps, the lowest one (0 nearest the boxes) that no interval
    already in it meets; the short intervals are placed first, so that the long ones arc around them."""
    taken: list[list[tuple[int, int]]] = []
    lane = [0] * len(spans)
    for i in sorted(range(len(spans)), key=lambda i: (spans[i][1] - spans[i][0], i)):
        lo, hi = spans[i]
        k = 0
        while k < len(taken) and any(lo <= b and a <= hi for a, b in taken[k]):
            k += 1
        if k == len(taken):
            taken.append([])
        taken[k].append((lo, hi))
        lane[i] = k
    return lane


def dag(nodes: Sequence[tuple[str, str]], edges: Sequence[tuple[str, str]], *, label: str, element_id: str,
        box_width: int = 180, box_height: int = 48, gap_x: int = 60, gap_y: int = 22, lane: int = 16) -> str:
    """Boxes (name, status) left to right by dependency, an arrow from each step to those that bind to
    its outputs. Each box has a band in its status colour (charts.FILLS) and its status written in it:
    colour is never the only sign.

    An arrow between neighbouring columns is one curve in the gap between them. Any other arrow (one
    that skips a column, or goes back in a cycle the model would refuse) would run behind the boxes in
    between, so it climbs in the gap after its source to a lane above the boxes (or below, for steps in
    the lower half), runs along it and comes down in the gap before its target, entering from the
    left; the figure grows by a `lane` for each lane used."""
    if not nodes:
        return _empty(element_id, "This pipeline has no steps.")
    names = [n for n, _ in nodes]
    column = layers(names, edges)
    by_column: dict[int, list[str]] = {}
    for name in names:
        by_column.setdefault(column[name], []).append(name)
    rows = max(len(v) for v in by_column.values())
    columns = max(by_column) + 1
    pad = 12
    row_of: dict[str, float] = {}
    for members in by_column.values():
        for i, name in enumerate(members):
            row_of[name] = (rows - len(members)) / 2 + i  # a short column centred
    drawn: list[tuple[str, str]] = []
    for a, b in edges:
        if a in column and b in column and a != b and (a, b) not in drawn:
            drawn.append((a, b))
    # The arrows that leave the gap next to them: each takes the gaps it turns in (gap i lies between
    # columns i and i + 1), a side by where its ends are, and a lane on that side.
    routed = [(a, b) for a, b in drawn if column[b] != column[a] + 1]
    spans = [(column[a], column[b] - 1) if column[b] > column[a] else (column[b] - 1, column[a]) for a, b in routed]
    middle = (rows - 1) / 2
    above = [row_of[a] + row_of[b] <= 2 * middle for a, b in routed]
    lane_of: dict[tuple[str, str], tuple[bool, int]] = {}
    for side in (True, False):
        picked = [i for i in range(len(routed)) if above[i] == side]
        for i, k in zip(picked, _lanes([spans[i] for i in picked])):
            lane_of[routed[i]] = (side, k)
    n_above = 1 + max((k for side, k in lane_of.values() if side), default=-1)
    n_below = 1 + max((k for side, k in lane_of.values() if not side), default=-1)
    backwards = any(column[b] <= column[a] for a, b in routed)
    left = pad + (gap_x // 2 if backwards else 0)  # room for a backward arrow to turn before column 0
    top = pad + n_above * lane
    bottom = top + rows * box_height + (rows - 1) * gap_y
    width = 2 * left + columns * box_width + (columns - 1) * gap_x
    legend_y = bottom + n_below * lane + 16
    height = legend_y + 26
    where = {name: (left + column[name] * (box_width + gap_x), top + row_of[name] * (box_height + gap_y))
             for name in names}
    parts = _open(element_id, label, width, height)
    marker = f"{escape(element_id)}-arrow"
    parts.append(f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                 f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{MUTED}"/>'
                 "</marker></defs>")
    half = gap_x / 2
    for a, b in drawn:
        ax, ay = where[a]
        bx, by = where[b]
        x1, y1 = ax + box_width, ay + box_height / 2
        x2, y2 = bx, by + box_height / 2
        if (a, b) not in lane_of:  # neighbouring columns: one curve in the gap between them
            mid = (x1 + x2) / 2
            d = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}"
        else:
            side, k = lane_of[(a, b)]
            ly = top - lane * (k + 0.5) if side else bottom + lane * (k + 0.5)
            if x2 > x1:  # forward, over the columns in between
                d = (f"M{x1:.1f},{y1:.1f} C{x1 + half:.1f},{y1:.1f} {x1 + half:.1f},{ly:.1f} {x1 + gap_x:.1f},{ly:.1f} "
                     f"L{x2 - gap_x:.1f},{ly:.1f} "
                     f"C{x2 - half:.1f},{ly:.1f} {x2 - half:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}")
            else:  # backward: a turn after the source, a turn before the target
                d = (f"M{x1:.1f},{y1:.1f} C{x1 + half:.1f},{y1:.1f} {x1 + half:.1f},{ly:.1f} {x1:.1f},{ly:.1f} "
                     f"L{x2:.1f},{ly:.1f} "
                     f"C{x2 - half:.1f},{ly:.1f} {x2 - half:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}")
        parts.append(f'<path d="{d}" fill="none" stroke="{MUTED}" stroke-width="1.5" marker-end="url(#{marker})">'
                     f"<title>{escape(a)} → {escape(b)}</title></path>")
    legend: dict[str, str] = {}
    for name, status in nodes:
        x, y = where[name]
        fill = FILLS[state_class(status or "NotStarted")]
        legend.setdefault(status or "NotStarted", fill)
        parts.append(f'<g class="step" data-step="{escape(name)}" data-status="{escape(status or "")}">'
                     f"<title>{escape(name)}: {escape(status or 'NotStarted')}</title>"
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_width}" height="{box_height}" rx="6" fill="#fff" '
                     f'stroke="{fill}" stroke-width="2"/>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="8" height="{box_height}" rx="3" fill="{fill}"/>'
                     f'<text x="{x + 16:.1f}" y="{y + 20:.1f}" font-size="13" font-weight="600" fill="{INK}">'
                     f"{escape(charts.short(name, 20))}</text>"
                     f'<text x="{x + 16:.1f}" y="{y + 38:.1f}" font-size="12" fill="{MUTED}">'
                     f"{escape(status or 'NotStarted')}</text></g>")
    parts.append(charts.legend(legend, pad, legend_y))
    parts.append("</svg>")
    return "".join(parts)
