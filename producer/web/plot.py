"""Accuracy per model version as a small inline SVG: no plotting library, no script."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["accuracy_svg"]

WIDTH, HEIGHT, PAD = 640, 220, 40
SERIES = (("base", "base set", "#2563eb"), ("labelled", "held-out labels", "#d97706"))


def accuracy_svg(versions: list[dict[str, Any]]) -> str:
    """Two lines over the versions, oldest left: accuracy on the base set and on held-out labels
    (a version without a figure leaves a gap). The y axis spans the figures shown, to 100%."""
    values = [v["figures"][k] for v in versions for k, _, _ in SERIES if v["figures"][k] is not None]
    if not values:
        return '<p class="muted">No gate figures yet.</p>'
    low = max(0.0, min(values) - 0.02)
    n = len(versions)

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / max(n - 1, 1))

    def y(value: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - low) / max(1.0 - low, 1e-9)

    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="accuracy per version" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
    ]
    for tick in (low, (low + 1) / 2, 1.0):
        parts.append(f'<text x="4" y="{y(tick) + 4:.1f}" font-size="11">{tick:.1%}</text>')
        parts.append(f'<line x1="{PAD}" y1="{y(tick):.1f}" x2="{WIDTH - PAD}" y2="{y(tick):.1f}" stroke="#eee"/>')
    for i, version in enumerate(versions):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="middle">'
            f"{escape(str(version['version']))}</text>"
        )
    for row, (key, label, colour) in enumerate(SERIES):
        points = [(x(i), y(v["figures"][key])) for i, v in enumerate(versions) if v["figures"][key] is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>' for px, py in points]
        parts.append(
            f'<text x="{WIDTH - PAD - 150}" y="{14 + 14 * row}" font-size="12" fill="{colour}">&#9679; {label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
