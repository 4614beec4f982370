"""The compliance report's inline SVG charts: live secrets per key version, and a
timeline of every version's life. Plain SVG text, every string HTML-escaped, nothing
fetched, so the HTML report stays one self-contained file."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from ledger.domain import parse_time
from projections.reports.compliance import ComplianceReport

STATUS_COLOURS = {
    "active": "#1a7f37", "decrypt-only": "#0969da", "retired": "#9a6700",
    "scheduled-for-destruction": "#bc4c00", "destroyed": "#6e7781",
}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` whose quarters are whole numbers."""
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 3 * magnitude, 5 * magnitude):
            if 4 * step >= value:
                return 4 * step
        magnitude *= 10


def bar_chart(report: ComplianceReport) -> str:
    """An SVG bar per key version (``data-version``), as tall as its live secrets."""
    versions = report.inventory
    left, right, bottom, top, height = 44, 12, 30, 18, 250
    width = min(760, max(320, left + right + 64 * len(versions)))
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = _nice_max(max((v.live_secrets for v in versions), default=0))
    slot = plot_w / max(len(versions), 1)
    bar_w = min(44.0, slot * 0.66)
    label_every = max(1, math.ceil(26 / slot))  # keep version labels from overlapping
    parts = ['<figure><figcaption>Live secrets per key version</figcaption>'
             f'<svg class="chart" id="chart-secrets" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" '
             'aria-label="Live secrets per key version">']
    for tick in range(5):
        value = ceiling * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
                     'stroke="#d8dee4" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#57606a">{value:g}</text>')
    for n, v in enumerate(versions):
        h = plot_h * v.live_secrets / ceiling
        x = left + slot * n + (slot - bar_w) / 2
        y = top + plot_h - h
        colour = STATUS_COLOURS.get(v.status, "#57606a")
        parts.append(
            f'<rect class="bar" data-version="{v.version}" data-live="{v.live_secrets}" '
            f'data-status="{_e(v.status)}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>version {v.version} '
            f"({_e(v.status)}): {v.live_secrets} live secrets</title></rect>")
        cx = x + bar_w / 2
        if slot >= 22:
            parts.append(f'<text x="{cx:.1f}" y="{y - 5:.1f}" font-size="11" '
                         f'text-anchor="middle" fill="#1f2328">{v.live_secrets}</text>')
        if n % label_every == 0:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16:.1f}" font-size="12" '
                         f'text-anchor="middle" fill="#1f2328">v{v.version}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
                 'stroke="#57606a" stroke-width="1"/>')
    parts.append(f'<text x="10" y="{top + plot_h / 2:.1f}" font-size="11" fill="#57606a" '
                 f'transform="rotate(-90 10 {top + plot_h / 2:.1f})" text-anchor="middle">'
                 "live secrets</text>")
    parts.append("</svg>")
    parts.append(_legend(width))
    parts.append("</figure>")
    return "".join(parts)


def _legend(width: int) -> str:
    items = "".join(
        f'<span style="margin-right:14px;white-space:nowrap"><span style="display:inline-block;'
        f'width:10px;height:10px;background:{colour};margin-right:4px"></span>{_e(status)}</span>'
        for status, colour in STATUS_COLOURS.items())
    return f'<div class="note" style="max-width:{width}px">{items}</div>'


def _moment(text: str | None) -> float | None:
    if not text:
        return None
    return parse_time(text).timestamp()


MARKERS = ("created", "rotated", "retired", "destroyed")


def _marker(kind: str, x: float, y: float, version: int, when: str) -> str:
    title = f"<title>version {version} {kind} {_e(when.replace('T', ' ')[:19])}</title>"
    common = f'class="marker" data-marker="{kind}" data-version="{version}"'
    if kind == "created":
        return (f'<circle {common} cx="{x:.1f}" cy="{y}" r="5" fill="#fff" stroke="#1f2328" '
                f'stroke-width="2">{title}</circle>')
    if kind == "rotated":
        pts = f"{x:.1f},{y - 6} {x + 6:.1f},{y} {x:.1f},{y + 6} {x - 6:.1f},{y}"
        return f'<polygon {common} points="{pts}" fill="#0969da">{title}</polygon>'
    if kind == "retired":
        return (f'<rect {common} x="{x - 5:.1f}" y="{y - 5}" width="10" height="10" '
                f'fill="#9a6700">{title}</rect>')
    return (f'<g {common}><path d="M{x - 5:.1f},{y - 5}L{x + 5:.1f},{y + 5}M{x - 5:.1f},{y + 5}'
            f'L{x + 5:.1f},{y - 5}" stroke="#cf222e" stroke-width="3"/>{title}</g>')


def timeline(report: ComplianceReport) -> str:
    """An SVG lane per key version along a time axis, from creation to now (or to its
    destruction), thick while it was the encrypting version, with a marker where it was
    created, rotated out, retired and destroyed."""
    versions = report.inventory
    now = _moment(report.generated_at) or 0.0
    first = min([_moment(v.created_at) or now for v in versions], default=now)
    last = max([now] + [_moment(v.destroy_after) or now for v in versions])
    span = max(last - first, 1.0)
    left, right, top, lane, width = 44, 36, 22, 28, 780
    height = top + lane * max(len(versions), 1) + 40
    plot_w = width - left - right
    axis_y = top + lane * len(versions) + 4

    def x_of(moment: float) -> float:
        return left + plot_w * (moment - first) / span

    parts = ['<figure><figcaption>Key versions over time</figcaption>'
             f'<svg class="chart" id="chart-timeline" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" '
             'aria-label="Key version timeline">']
    ticks, pattern = time_ticks(first, first + span)
    for moment in ticks:
        x = x_of(moment)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" '
                     'stroke="#eaeef2" stroke-width="1"/>')
        label = datetime.fromtimestamp(moment, UTC).strftime(pattern)
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle" '
                     f'fill="#57606a">{_e(label)}</text>')
    for n, v in enumerate(versions):
        y = top + lane * n + lane // 2
        start = _moment(v.created_at) or now
        end = _moment(v.destroyed_at) or now
        parts.append(f'<text x="{left - 12}" y="{y + 4}" font-size="12" text-anchor="end" '
                     f'fill="#1f2328">v{v.version}</text>')
        parts.append(f'<line class="lane" data-version="{v.version}" x1="{x_of(start):.1f}" '
                     f'y1="{y}" x2="{x_of(end):.1f}" y2="{y}" stroke="#afb8c1" stroke-width="3"/>')
        active_from = _moment(v.activated_at)
        if active_from is not None:
            active_to = _moment(v.rotated_at) or end
            parts.append(f'<line class="in-use" data-version="{v.version}" '
                         f'x1="{x_of(active_from):.1f}" y1="{y}" x2="{x_of(active_to):.1f}" '
                         f'y2="{y}" stroke="{STATUS_COLOURS["active"]}" stroke-width="9" '
                         'stroke-linecap="round" opacity="0.8"/>')
        pending = _moment(v.destroy_after)
        if pending is not None:
            parts.append(f'<line x1="{x_of(end):.1f}" y1="{y}" x2="{x_of(pending):.1f}" y2="{y}" '
                         f'stroke="{STATUS_COLOURS["scheduled-for-destruction"]}" '
                         'stroke-width="2" stroke-dasharray="4 3"/>')
        for kind, when in zip(MARKERS, (v.created_at, v.rotated_at, v.retired_at, v.destroyed_at),
                              strict=True):
            if when:
                parts.append(_marker(kind, x_of(_moment(when) or now), y, v.version, when))
    parts.append(f'<line x1="{x_of(now):.1f}" y1="{top - 10}" x2="{x_of(now):.1f}" y2="{axis_y}" '
                 'stroke="#cf222e" stroke-width="1" stroke-dasharray="3 3"/>')
    parts.append(f'<text x="{x_of(now) - 4:.1f}" y="{top - 4}" font-size="10" text-anchor="end" '
                 'fill="#cf222e">report time</text>')
    parts.append("</svg>")
    parts.append(f'<div class="note" style="max-width:{width}px">○ created · '
                 '<span style="color:#0969da">◆</span> rotated out · '
                 '<span style="color:#9a6700">■</span> retired · <span style="color:#cf222e">✕'
                 '</span> destroyed · thick green: encrypting (current) · dashed: waiting for a '
                 "scheduled destruction</div></figure>")
    return "".join(parts)


_TICK_SECONDS = (1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400,
                 2 * 86_400, 7 * 86_400, 14 * 86_400)
_TICK_MONTHS = (1, 2, 3, 6, 12, 24, 60, 120)
_MONTH_SECONDS = 30.44 * 86_400


def time_ticks(first: float, last: float, most: int = 8) -> tuple[list[float], str]:
    """Round moments between ``first`` and ``last`` (UTC seconds) for a time axis, at most
    ``most`` of them (calendar months past two weeks' steps), and a strftime pattern."""
    span = last - first
    for step in _TICK_SECONDS:
        if span / step <= most:
            tick = math.ceil(first / step) * step
            pattern = "%Y-%m-%d" if step >= 86_400 else "%m-%d %H:%M" if step >= 3600 else (
                "%H:%M" if step >= 60 else "%H:%M:%S")
            return [float(t) for t in range(tick, int(last) + 1, step)], pattern
    months = next((m for m in _TICK_MONTHS if span / (m * _MONTH_SECONDS) <= most), _TICK_MONTHS[-1])
    begin = datetime.fromtimestamp(first, UTC)
    index = begin.year * 12 + begin.month - 1 + (begin > datetime(begin.year, begin.month, 1, tzinfo=UTC))
    index = -(-index // months) * months
    ticks = []
    while (moment := datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp()) <= last:
        ticks.append(moment)
        index += months
    return ticks, "%Y-%m" if months < 12 else "%Y"
