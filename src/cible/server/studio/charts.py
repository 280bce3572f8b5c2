"""Server-drawn SVG figures that need no script: state timelines (a job's statuses, a cluster's
nodes). Pure functions of their data; the text they carry is escaped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from cible.server.studio.web import status_class

# Fill of each badge class (studio.css's badge colours, darker: they are bars, not text).
FILLS = {"run": "#218bff", "ok": "#2da44e", "bad": "#cf222e", "wait": "#d4a72c", "stop": "#8c959f",
         "other": "#8c959f"}
NODE_CLASSES = {"idle": "ok", "running": "run", "preparing": "wait", "leaving": "stop", "removed": "stop",
                "unusable": "bad", "preempted": "bad"}  # core/lifecycle/nodes.py NodeState


@dataclass(frozen=True)
class Span:
    state: str
    start: datetime
    end: datetime


def spans(history: list[tuple[str, datetime]], until: datetime) -> list[Span]:
    """Consecutive (state, since) changes as spans, the last one running to `until`."""
    out = []
    for (state, start), nxt in zip(history, [*history[1:], (None, until)]):
        end = max(nxt[1], start)
        out.append(Span(state, start, end))
    return out


def state_class(state: str) -> str:
    """The colour class of a job status or a node state."""
    return NODE_CLASSES.get(state.lower(), status_class(state))


def legend(entries: dict[str, str], x: float, y: float) -> str:
    """A row of colour swatches, each with its name: {name: fill}."""
    parts = []
    for name, fill in entries.items():
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{fill}"/>'
                     f'<text x="{x + 16}" y="{y + 11}" font-size="12" fill="#1f2328">{escape(name)}</text>')
        x += 30 + 7 * len(name)
    return "".join(parts)


def short(label: str, room: int = 19) -> str:
    """A label cut to `room` characters, its start and end kept (names differ at both: trial_12, node …a4c_d)."""
    if len(label) <= room:
        return label
    tail = min(6, (room - 1) // 3)
    return f"{label[:room - 1 - tail]}…{label[-tail:] if tail else ''}"


def timeline(rows: list[tuple[str, list[Span]]], *, label: str, element_id: str, width: int = 900,
             row_height: int = 22) -> str:
    """One bar per row, split into its states over time; a legend of the states drawn below."""
    starts = [s.start for _, ss in rows for s in ss]
    ends = [s.end for _, ss in rows for s in ss]
    if not starts:
        return f'<p id="{escape(element_id)}" class="muted">No history yet.</p>'
    t0, t1 = min(starts), max(ends)
    total = max((t1 - t0).total_seconds(), 1e-3)
    left, right = 150, 10
    plot = width - left - right
    legend_y = len(rows) * (row_height + 6) + 8
    height = legend_y + 24
    parts = [f'<svg class="figure" id="{escape(element_id)}" role="img" aria-label="{escape(label)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(label)}</title>"]
    seen: dict[str, str] = {}
    for i, (name, row) in enumerate(rows):
        y = i * (row_height + 6)
        parts.append(f'<text x="0" y="{y + row_height * 0.7:.1f}" font-size="12" fill="#1f2328">'
                     f"<title>{escape(name)}</title>{escape(short(name))}</text>")
        for span in row:
            x = left + plot * (span.start - t0).total_seconds() / total
            w = max(plot * (span.end - span.start).total_seconds() / total, 1.5)
            fill = FILLS[state_class(span.state)]
            seen.setdefault(span.state, fill)
            secs = (span.end - span.start).total_seconds()
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_height}" fill="{fill}">'
                         f"<title>{escape(span.state)}: {secs:.1f} s from {span.start:%H:%M:%S}</title></rect>")
    parts.append(legend(seen, left, legend_y))
    parts.append(f'<text x="0" y="{legend_y + 11}" font-size="11" fill="#57606a">{t0:%H:%M:%S} → {t1:%H:%M:%S}</text>')
    parts.append("</svg>")
    return "".join(parts)
