"""Small charts for the admin pages, drawn on the server as SVG: no script, no build step.

Pure functions from the API's figures to a `Chart`: its SVG (an image with a title, scaled
to its container's width through its viewBox) and a sentence saying what it shows, for
screen readers, tests and anyone who would rather read. A chart with nothing to draw is no
SVG at all, only the sentence. Times are relative ("-2 h", "now") or UTC, said so: the
server does not know the viewer's time zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = [
    "HEIGHT",
    "PLOT",
    "WIDTH",
    "Chart",
    "changes_chart",
    "duration_ms",
    "history_chart",
    "latency_chart",
]

WIDTH, HEIGHT = 600, 170  # the viewBox; the SVG itself is as wide as its container
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 10, 24  # room for the axes' labels
PLOT = (LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM)  # x, y, width, height


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    """An SVG image (empty when there is nothing to draw) and what it shows, in words."""

    svg: Markup
    summary: str

    @property
    def empty(self) -> bool:
        """True when there was nothing to draw (the summary says so)."""
        return not self.svg


# -- scales and text ----------------------------------------------------------------------------


def _nice(value: float) -> float:
    """The least of 1, 2 or 5 times a power of ten at or above `value` (an axis' top)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _num(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


_UNITS = ((60_000.0, "min"), (1000.0, "s"), (1.0, "ms"))


def duration_ms(ms: float) -> str:
    """A latency as a person reads it: `4.5 ms`, `40 ms`, `1.2 s`, `3.5 min`."""
    size, unit = next(((size, unit) for size, unit in _UNITS if ms >= size), _UNITS[-1])
    value = ms / size
    return f"{_num(value) if value < 10 else f'{value:.0f}'} {unit}"


def _utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- the frame ----------------------------------------------------------------------------------


def _text(x: float, y: float, words: str, anchor: str = "end") -> str:
    return f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}">{escape(words)}</text>'


def _frame(
    label: str, body: list[str], y_ticks: list[tuple[float, str]], x_ticks: list[tuple[float, str]]
) -> Markup:
    """The SVG: title, grid lines at the y ticks (plot fractions 0 at the bottom to 1 at the
    top), the axes' labels (x ticks as plot fractions from the left), then `body`."""
    x0, y0, w, h = PLOT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%">',
        f"<title>{escape(label)}</title>",
        '<g class="axis">',
    ]
    for frac, words in y_ticks:
        y = y0 + h * (1 - frac)
        parts.append(f'<line class="grid" x1="{x0}" x2="{x0 + w}" y1="{_num(y)}" y2="{_num(y)}"/>')
        parts.append(_text(x0 - 6, y + 4, words))
    for frac, words in x_ticks:
        anchor = "start" if frac <= 0 else "end" if frac >= 1 else "middle"
        parts.append(_text(x0 + w * frac, HEIGHT - 6, words, anchor))
    parts.append("</g>")
    return Markup("".join([*parts, *body, "</svg>"]))


def _hours_ticks(hours: int) -> list[tuple[float, str]]:
    """Ticks "-N h" (with a minus sign) to "now" along a window of `hours` hours ending now."""
    step = 1 if hours <= 6 else 3 if hours <= 12 else 6
    ticks = [(1 - k / hours, f"\N{MINUS SIGN}{k} h") for k in range(hours, 0, -step)]
    return [*ticks, (1.0, "now")]


def _bars(columns: Sequence[Sequence[tuple[float, str]]], slots: int) -> list[str]:
    """One column per slot (left to right): its bars as (height as a plot fraction, class),
    each from the bottom up to its fraction; stacked bars give cumulative fractions."""
    x0, y0, w, h = PLOT
    width = w / slots
    out = []
    for i, column in enumerate(columns):
        for frac, cls in column:
            if frac <= 0:
                continue
            top = y0 + h * (1 - min(1.0, frac))
            out.append(
                f'<rect class="{cls}" x="{_num(x0 + i * width)}" y="{_num(top)}" '
                f'width="{_num(max(width * 0.8, 0.5))}" height="{_num(y0 + h - top)}"/>'
            )
    return out


def _by_slot(minutes: list[dict[str, Any]], since: float, slots: int) -> list[dict[str, Any]]:
    """The API's sparse minutes, one per slot of the window (an empty minute is {})."""
    out: list[dict[str, Any]] = [{} for _ in range(slots)]
    for minute in minutes:
        i = int((minute["at"] - since) // 60)
        if 0 <= i < slots:
            out[i] = minute
    return out


# -- the overview's charts ----------------------------------------------------------------------


def changes_chart(activity: dict[str, Any]) -> Chart:
    """Changes per minute (`GET /api/activity`): made here and received from peers, stacked."""
    hours, totals = activity["hours"], activity["totals"]
    local, received = totals["local"], totals["received"]
    if not local and not received:
        return Chart(Markup(""), f"No changes in the last {_plural(hours, 'hour')}.")
    slots = hours * 60
    minutes = _by_slot(activity["minutes"], activity["since"], slots)
    peak = max(m.get("local", 0) + m.get("received", 0) for m in minutes)
    top = _nice(peak)
    columns = [
        [
            ((m.get("local", 0) + m.get("received", 0)) / top, "received"),
            (m.get("local", 0) / top, "local"),
        ]
        for m in minutes
    ]
    label = f"Changes per minute, the last {_plural(hours, 'hour')}"
    y_ticks = [(0.0, "0"), (1.0, f"{_num(top)}/min")]
    if top % 2 == 0:  # a whole number half-way
        y_ticks.insert(1, (0.5, _num(top / 2)))
    svg = _frame(label, _bars(columns, slots), y_ticks, _hours_ticks(hours))
    summary = (
        f"{_plural(local, 'change')} made here and {received} received from peers in the last "
        f"{_plural(hours, 'hour')}; at most {peak} in one minute."
    )
    return Chart(svg, summary)


LATENCY_FLOOR_MS = 1.0  # the bottom of the latency axis (log scale)


def _log_frac(ms: float, top: float) -> float:
    low = math.log10(LATENCY_FLOOR_MS)
    return (math.log10(max(ms, LATENCY_FLOOR_MS)) - low) / (math.log10(top) - low)


def latency_chart(activity: dict[str, Any]) -> Chart:
    """Propagation latency per minute (`GET /api/activity`): the max and the p50 of the events
    received from peers, on a log scale (a partition's minutes beside loopback's ms)."""
    hours, totals = activity["hours"], activity["totals"]
    measured = (
        f"since {_utc(activity['latency_since'])}"
        if activity["latency_since"] > activity["since"]
        else f"in the last {_plural(hours, 'hour')}"
    )
    if not totals["latency_events"]:
        return Chart(Markup(""), f"No events received from peers {measured}: no latency to show.")
    slots = hours * 60
    minutes = _by_slot(activity["minutes"], activity["since"], slots)
    top = 10 ** max(1, math.ceil(math.log10(max(totals["latency_max_ms"], 10.0))))
    columns = [
        [(_log_frac(m["latency_max_ms"], top), "max"), (_log_frac(m["latency_p50_ms"], top), "p50")]
        if m.get("latency_max_ms") is not None
        else []
        for m in minutes
    ]
    y_ticks = [
        (_log_frac(10.0**k, top), duration_ms(10.0**k)) for k in range(int(math.log10(top)) + 1)
    ]
    label = f"Propagation latency per minute (p50 and max), the last {_plural(hours, 'hour')}"
    svg = _frame(label, _bars(columns, slots), y_ticks, _hours_ticks(hours))
    summary = (
        f"{_plural(totals['latency_events'], 'event')} received from peers {measured}, from "
        f"their origin's change to applied here: p50 {duration_ms(totals['latency_p50_ms'])}, "
        f"max {duration_ms(totals['latency_max_ms'])}."
    )
    return Chart(svg, summary)


# -- the explain page's chart -------------------------------------------------------------------


def history_chart(points: list[dict[str, Any]], now: float) -> Chart:
    """A SKU's pool over time (`history` of `GET /api/explain`): a step line from its first
    listed event to now, between its lowest and highest values (and zero when it crossed)."""
    if not points:
        return Chart(Markup(""), "No change held here: nothing to draw over time.")
    values = [p["pool"] for p in points]
    first, last = points[0], points[-1]
    low, high = min(values), max(values)
    start, end = first["at"], max(now, last["at"])
    x0, y0, w, h = PLOT

    def level(value: int) -> float:
        """A value's height as a plot fraction: the range fills the middle four fifths."""
        return 0.1 + 0.8 * (value - low) / (high - low) if high > low else 0.5

    def x(at: float) -> float:
        return x0 + w * ((at - start) / (end - start) if end > start else 1.0)

    def y(value: int) -> float:
        return y0 + h * (1 - level(value))

    path = [f"M{_num(x(start))},{_num(y(first['pool']))}"]
    for p in points[1:]:
        path.append(f"H{_num(x(p['at']))}V{_num(y(p['pool']))}")
    path.append(f"H{_num(x(end))}")
    body = [
        f'<path class="pool" d="{"".join(path)}"/>',
        f'<circle class="pool" cx="{_num(x(end))}" cy="{_num(y(last["pool"]))}" r="3"/>',
    ]
    y_ticks = [(level(v), str(v)) for v in sorted({low, high})]
    if low < 0 < high and all(abs(level(0) - frac) >= 0.1 for frac, _ in y_ticks):
        y_ticks.append((level(0), "0"))  # where it went below zero, unless too close to read
    label = "The count over time"
    svg = _frame(label, body, y_ticks, [(0.0, _utc(start)), (1.0, "now")])
    changes = sum(1 for a, b in itertools.pairwise(points) if a["pool"] != b["pool"])
    summary = (
        f"The count is {last['pool']} now; it was {first['pool']} on {_utc(start)}, "
        f"{_plural(changes, 'change')} of it since (lowest {low}, highest {high})."
    )
    return Chart(svg, summary)
