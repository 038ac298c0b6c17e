"""Inline SVG charts, rendered on the server: no JavaScript library, nothing to
fetch (the machines have no internet). Pure functions of plain values.

Labels are never clipped: the label column is as wide as the longest label needs
(CHAR_PX per character, an upper bound for the page's 11px sans-serif), and a label
longer than LABEL_CHARS_MAX is shortened in the middle with its full text in a
<title> (shown on hover). The SVGs scale to their container (viewBox, width 100%)."""

from __future__ import annotations

from html import escape

MAX_BARS = 48
WIDTH_PX, HEIGHT_PX = 640, 180
CHAR_PX = 7  # at 11px, the widest common glyphs are ~6.5px
LABEL_CHARS_MAX = 40
LABEL_PX_MIN = 60
VALUE_PX = 70  # room right of the longest bar for its value


def short_label(label: str, max_chars: int = LABEL_CHARS_MAX) -> str:
    """`label`, or its start and end around an ellipsis when longer than `max_chars`."""
    assert max_chars >= 5
    if len(label) <= max_chars:
        return label
    head = (max_chars - 1) // 2
    return f"{label[:head]}…{label[len(label) - (max_chars - 1 - head) :]}"


def label_px(labels: list[str]) -> int:
    """The label column's width: the longest (shortened) label fits whole."""
    return max([LABEL_PX_MIN] + [len(short_label(x)) * CHAR_PX + 12 for x in labels])


def _svg(title: str, testid: str, width: int, height: int, body: str) -> str:
    return (
        f'<svg role="img" aria-label="{escape(title)}" data-testid="{escape(testid)}" width="100%" '
        f'style="max-width:{width}px" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def hbar_chart(items: list[tuple[str, int]], title: str, testid: str) -> str:
    """Horizontal bars, one per (label, value), longest first as given."""
    items = items[:MAX_BARS]
    assert all(v >= 0 for _, v in items), "bar values are counts"
    row_px = 20
    height = max(1, len(items)) * row_px + 8
    left = label_px([x for x, _ in items])
    width = max(WIDTH_PX, left + 200 + VALUE_PX)
    top = max((v for _, v in items), default=0) or 1
    bars = []
    for i, (label, value) in enumerate(items):
        y = 4 + i * row_px
        w = round((width - left - VALUE_PX) * value / top)
        bars.append(
            f"<g><title>{escape(label)}: {value}</title>"
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" class="label">{escape(short_label(label))}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w}" height="{row_px - 6}" class="bar"/>'
            f'<text x="{left + w + 4}" y="{y + 13}">{value}</text></g>'
        )
    empty = '<text x="8" y="16">no data</text>' if not items else ""
    return _svg(title, testid, width, height, empty + "".join(bars))


def column_chart(items: list[tuple[str, int, int]], title: str, testid: str) -> str:
    """Columns over time: (label, total, part) per bucket, the part drawn inside the
    total (attempts and approvals per bucket); the first and last labels under the axis."""
    items = items[-MAX_BARS:]
    assert all(0 <= part <= total for _, total, part in items), "the part is within the total"
    top = max((t for _, t, _ in items), default=0) or 1
    plot_px = HEIGHT_PX - 30
    slot = (WIDTH_PX - 10) / max(1, len(items))
    cols = []
    for i, (label, total, part) in enumerate(items):
        x = 5 + i * slot
        h_total, h_part = plot_px * total / top, plot_px * part / top
        cols.append(
            f"<g><title>{escape(label)}: {part} of {total}</title>"
            f'<rect x="{x:.1f}" y="{plot_px - h_total + 5:.1f}" width="{max(1.0, slot - 2):.1f}" '
            f'height="{h_total:.1f}" class="total"/>'
            f'<rect x="{x:.1f}" y="{plot_px - h_part + 5:.1f}" width="{max(1.0, slot - 2):.1f}" '
            f'height="{h_part:.1f}" class="part"/></g>'
        )
    axis = (
        f'<text x="5" y="{HEIGHT_PX - 6}">{escape(items[0][0])}</text>'
        f'<text x="{WIDTH_PX - 5}" y="{HEIGHT_PX - 6}" text-anchor="end">{escape(items[-1][0])}</text>'
        if items
        else '<text x="8" y="16">no data</text>'
    )
    return _svg(title, testid, WIDTH_PX, HEIGHT_PX, "".join(cols) + axis)
