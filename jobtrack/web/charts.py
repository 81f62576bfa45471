"""Server-rendered SVG charts for the Insights page: no script, no build step.

Each chart is readable without colour alone: failed bars are hatched as well as red,
p95 lines are dashed where p50 lines are solid, every chart has a text legend, a title
and a description for screen readers, and each bar or point carries its figures in a
``<title>`` (the tooltip). Every text is escaped; numbers are formatted here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from markupsafe import Markup, escape

from ..models import Trend

__all__ = ["PATTERNS", "duration_label", "lines_chart", "sparkline", "throughput_chart"]

WIDTH, HEIGHT = 370, 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 22, 20


def duration_label(ms: float | None) -> str:
    """1.2 s, 340 ms, 4.5 min, 2.0 h; a dash for none."""
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def _when(moment: datetime | None, bucket_s: int) -> str:
    if moment is None:
        return ""
    return moment.strftime("%m-%d %H:%M" if bucket_s < 86400 else "%Y-%m-%d")


def _frame(title: str, description: str, legend: Sequence[tuple[str, str]], body: str) -> Markup:
    """An SVG with its title, description, legend (swatch markup, label) and body."""
    key = []
    x = _LEFT
    for swatch, label in legend:
        key.append(
            f'<g transform="translate({x},4)">{swatch}'
            f'<text x="16" y="10" class="legend">{escape(label)}</text></g>'
        )
        x += 16 + 7 * len(label) + 14
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"<desc>{escape(description)}</desc>{''.join(key)}{body}</svg>"
    )


#: The hatch failed bars are filled with: defined once per page (ids are page-wide).
PATTERNS = Markup(
    '<svg width="0" height="0" aria-hidden="true" style="position:absolute"><defs>'
    '<pattern id="jt-hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="5" height="5" class="failed-fill"/>'
    '<line x1="0" y1="0" x2="0" y2="5" class="hatch-line"/></pattern></defs></svg>'
)


def _axis(top_value: float, label: Callable[[float], str]) -> str:
    plot_h = HEIGHT - _TOP - _BOTTOM
    parts = []
    for frac in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" class="tick" text-anchor="end">'
            f"{escape(label(top_value * frac))}</text>"
        )
    return "".join(parts)


def _x_labels(buckets: Sequence[Trend], bucket_s: int) -> str:
    if not buckets:
        return ""
    plot_w = WIDTH - _LEFT - _RIGHT
    first, last = buckets[0].start, buckets[-1].start
    return (
        f'<text x="{_LEFT}" y="{HEIGHT - 6}" class="tick">{escape(_when(first, bucket_s))}</text>'
        f'<text x="{_LEFT + plot_w}" y="{HEIGHT - 6}" class="tick" text-anchor="end">'
        f"{escape(_when(last, bucket_s))}</text>"
    )


def throughput_chart(buckets: Sequence[Trend], bucket_s: int, name: str) -> Markup:
    """Finished jobs per bucket: completed (solid) under failed (red and hatched)."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    peak = max((t.finished for t in buckets), default=0) or 1
    step = plot_w / max(len(buckets), 1)
    bars = []
    for n, t in enumerate(buckets):
        x = _LEFT + n * step
        done_h = plot_h * t.completed / peak
        failed_h = plot_h * t.failed / peak
        tip = escape(
            f"{_when(t.start, bucket_s)}: {t.completed:,} completed, {t.failed:,} failed"
            + (f" ({100 * t.failure_rate:.1f}% failed)" if t.failure_rate else "")
        )
        bars.append(
            f"<g><title>{tip}</title>"
            f'<rect x="{x:.1f}" y="{_TOP + plot_h - done_h:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{done_h:.1f}" class="completed-fill"/>'
            f'<rect x="{x:.1f}" y="{_TOP + plot_h - done_h - failed_h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{failed_h:.1f}" fill="url(#jt-hatch)" '
            'class="failed-bar"/></g>'
        )
    total_done = sum(t.completed for t in buckets)
    total_failed = sum(t.failed for t in buckets)
    return _frame(
        f"{name}: jobs finished per bucket",
        f"{total_done:,} completed and {total_failed:,} failed over {len(buckets)} buckets; "
        f"the busiest bucket had {peak:,}.",
        [
            ('<rect width="12" height="10" class="completed-fill"/>', "completed"),
            ('<rect width="12" height="10" fill="url(#jt-hatch)"/>', "failed"),
        ],
        _axis(peak, lambda v: f"{v:,.0f}" if v == round(v) else "")
        + "".join(bars)
        + _x_labels(buckets, bucket_s),
    )


def lines_chart(
    buckets: Sequence[Trend], bucket_s: int, name: str, what: str, p50: str, p95: str
) -> Markup:
    """Two lines per bucket, p50 (solid) and p95 (dashed), of the Trend fields named
    ``p50`` and ``p95`` (milliseconds); buckets without jobs leave a gap."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    values = [getattr(t, f) for t in buckets for f in (p50, p95)]
    peak = max((v for v in values if v is not None), default=0.0) or 1.0
    step = plot_w / max(len(buckets), 1)
    body = [_axis(peak, duration_label)]
    for field, style in ((p50, "p50-line"), (p95, "p95-line")):
        runs: list[list[str]] = [[]]
        points = []
        for n, t in enumerate(buckets):
            value = getattr(t, field)
            if value is None:
                runs.append([])
                continue
            x = _LEFT + n * step + step / 2
            y = _TOP + plot_h * (1 - value / peak)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            tip = escape(f"{_when(t.start, bucket_s)}: {field[-3:]} {duration_label(value)}")
            points.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="{style}-dot">'
                f"<title>{tip}</title></circle>"
            )
        body.extend(f'<polyline points="{" ".join(run)}" class="{style}"/>' for run in runs if run)
        body.extend(points)
    body.append(_x_labels(buckets, bucket_s))
    p50s = [t for t in buckets if getattr(t, p50) is not None]
    return _frame(
        f"{name}: {what}",
        f"{what} p50 and p95 per bucket, {len(p50s)} of {len(buckets)} buckets with jobs; "
        f"highest {duration_label(peak)}.",
        [
            ('<line x1="0" y1="6" x2="12" y2="6" class="p50-line"/>', "p50"),
            ('<line x1="0" y1="6" x2="12" y2="6" class="p95-line"/>', "p95"),
        ],
        "".join(body),
    )


def sparkline(hourly: Sequence[int], *, width: int = 120, height: int = 24) -> Markup:
    """A failure group's last hours as bars, oldest first (the last ending now), with
    their figures as text for screen readers and in each bar's tooltip."""
    top = max(hourly, default=0) or 1
    step = width / max(len(hourly), 1)
    bars = []
    for n, count in enumerate(hourly):
        tall = 0 if not count else max(2.0, (height - 2) * count / top)
        ago = len(hourly) - n
        bars.append(
            f'<rect x="{n * step:.1f}" y="{height - tall:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{tall:.1f}" class="spark-bar"><title>{count:,} in the hour '
            f"{ago} h ago</title></rect>"
        )
    peak = max(hourly, default=0)
    said = f"{sum(hourly):,} in the last {len(hourly)} hours, at most {peak:,} an hour"
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(said)}"><title>{escape(said)}</title>'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="grid"/>'
        f"{''.join(bars)}</svg>"
    )
