"""Inline SVG charts, rendered on the server: no JavaScript library, nothing to
fetch (the machines have no internet). Pure functions of plain values."""

from __future__ import annotations

from html import escape

MAX_BARS = 48
WIDTH_PX, HEIGHT_PX = 640, 180
LABEL_PX = 150


def hbar_chart(items: list[tuple[str, int]], title: str, testid: str) -> str:
    """Horizontal bars, one per (label, value), longest first as given."""
    items = items[:MAX_BARS]
    assert all(v >= 0 for _, v in items), "bar values are counts"
    row_px = 20
    height = max(1, len(items)) * row_px + 8
    top = max((v for _, v in items), default=0) or 1
    bars = []
    for i, (label, value) in enumerate(items):
        y = 4 + i * row_px
        w = round((WIDTH_PX - LABEL_PX - 70) * value / top)
        bars.append(f'<text x="{LABEL_PX - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
                    f'<rect x="{LABEL_PX}" y="{y + 2}" width="{w}" height="{row_px - 6}" class="bar"/>'
                    f'<text x="{LABEL_PX + w + 4}" y="{y + 13}">{value}</text>')
    empty = '<text x="8" y="16">no data</text>' if not items else ""
    return (f'<svg role="img" aria-label="{escape(title)}" data-testid="{escape(testid)}" width="{WIDTH_PX}" '
            f'height="{height}" viewBox="0 0 {WIDTH_PX} {height}"><title>{escape(title)}</title>{empty}{"".join(bars)}</svg>')


def column_chart(items: list[tuple[str, int, int]], title: str, testid: str) -> str:
    """Columns over time: (label, total, part) per bucket, the part drawn inside the
    total (attempts and approvals per hour)."""
    items = items[-MAX_BARS:]
    assert all(0 <= part <= total for _, total, part in items), "the part is within the total"
    top = max((t for _, t, _ in items), default=0) or 1
    plot_px = HEIGHT_PX - 30
    slot = (WIDTH_PX - 10) / max(1, len(items))
    cols = []
    for i, (label, total, part) in enumerate(items):
        x = 5 + i * slot
        h_total, h_part = plot_px * total / top, plot_px * part / top
        cols.append(f'<g><title>{escape(label)}: {part} of {total}</title>'
                    f'<rect x="{x:.1f}" y="{plot_px - h_total + 5:.1f}" width="{max(1.0, slot - 2):.1f}" '
                    f'height="{h_total:.1f}" class="total"/>'
                    f'<rect x="{x:.1f}" y="{plot_px - h_part + 5:.1f}" width="{max(1.0, slot - 2):.1f}" '
                    f'height="{h_part:.1f}" class="part"/></g>')
    axis = (f'<text x="5" y="{HEIGHT_PX - 6}">{escape(items[0][0])}</text>'
            f'<text x="{WIDTH_PX - 5}" y="{HEIGHT_PX - 6}" text-anchor="end">{escape(items[-1][0])}</text>'
            if items else '<text x="8" y="16">no data</text>')
    return (f'<svg role="img" aria-label="{escape(title)}" data-testid="{escape(testid)}" width="{WIDTH_PX}" '
            f'height="{HEIGHT_PX}" viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}"><title>{escape(title)}</title>'
            f'{"".join(cols)}{axis}</svg>')
