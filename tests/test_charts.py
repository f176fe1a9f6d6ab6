"""The admin pages' SVG charts: values drawn where they belong, well-formed, said in words."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from agent.web.pages import charts

SVG = "{http://www.w3.org/2000/svg}"
NOW = 1_800_000_030.0  # 30 s into a minute
SINCE = (NOW // 60 - 179) * 60  # the first minute of a 3-hour window
X0, Y0, PLOT_W, PLOT_H = charts.PLOT
SLOT = PLOT_W / 180


def activity(minutes: list[dict[str, Any]], **totals: Any) -> dict[str, Any]:
    """An answer of GET /api/activity?hours=3, its totals summed from `minutes`."""
    full = [
        {"local": 0, "received": 0, "latency_p50_ms": None, "latency_max_ms": None, **m}
        for m in minutes
    ]
    measured = [m for m in full if m["latency_max_ms"] is not None]
    return {
        "hours": 3,
        "since": SINCE,
        "now": NOW,
        "latency_since": SINCE - 3600,
        "totals": {
            "local": sum(m["local"] for m in full),
            "received": sum(m["received"] for m in full),
            "latency_events": len(measured),
            "latency_p50_ms": measured[0]["latency_p50_ms"] if measured else None,
            "latency_max_ms": max((m["latency_max_ms"] for m in measured), default=None),
            **totals,
        },
        "minutes": full,
    }


def parsed(chart: charts.Chart) -> ET.Element:
    """The chart's SVG as XML (it fails on markup that is not well-formed)."""
    root = ET.fromstring(str(chart.svg))
    assert root.tag == SVG + "svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.findtext(SVG + "title") == root.get("aria-label")
    assert root.get("viewBox") == f"0 0 {charts.WIDTH} {charts.HEIGHT}"
    assert root.get("width") == "100%"
    return root


def rects(root: ET.Element, cls: str) -> list[dict[str, float]]:
    return [
        {k: float(r.get(k, "nan")) for k in ("x", "y", "width", "height")}
        for r in root.iter(SVG + "rect")
        if r.get("class") == cls
    ]


def labels(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(SVG + "text")]


def test_changes_stack_per_minute_scaled_to_the_busiest_minute() -> None:
    chart = charts.changes_chart(
        activity(
            [
                {"at": SINCE + 10 * 60, "local": 2, "received": 3},  # the busiest: 5
                {"at": SINCE + 179 * 60, "local": 1},  # the current minute
            ]
        )
    )
    root = parsed(chart)
    local, received = rects(root, "local"), rects(root, "received")
    assert [round(r["x"]) for r in local] == [round(X0 + 10 * SLOT), round(X0 + 179 * SLOT)]
    # the axis tops at 5 per minute: received stacks on local to the busiest minute's total
    assert abs(received[0]["height"] - PLOT_H) < 0.1
    assert abs(local[0]["height"] - PLOT_H * 2 / 5) < 0.1
    assert abs(local[1]["height"] - PLOT_H / 5) < 0.1
    assert received[1]["height"] == local[1]["height"]  # nothing received: no band above
    for bar in local + received:
        assert abs(bar["y"] + bar["height"] - (Y0 + PLOT_H)) < 0.1  # standing on the axis
        assert bar["x"] + bar["width"] <= X0 + PLOT_W
    assert labels(root)[:2] == ["0", "5/min"]  # no half-way tick at 2.5 changes
    assert labels(root)[-4:] == [
        "\N{MINUS SIGN}3 h",
        "\N{MINUS SIGN}2 h",
        "\N{MINUS SIGN}1 h",
        "now",
    ]
    assert chart.summary == (
        "3 changes made here and 3 received from peers in the last 3 hours; "
        "at most 5 in one minute."
    )


def test_no_changes_is_said_instead_of_an_empty_chart() -> None:
    chart = charts.changes_chart(activity([]))
    assert chart.empty and str(chart.svg) == ""
    assert chart.summary == "No changes in the last 3 hours."


def test_latency_bars_are_on_a_log_scale_with_p50_over_max() -> None:
    chart = charts.latency_chart(
        activity([{"at": SINCE + 60, "latency_p50_ms": 10.0, "latency_max_ms": 100.0}])
    )
    root = parsed(chart)
    (high,), (p50,) = rects(root, "max"), rects(root, "p50")
    assert high["x"] == p50["x"] == round(X0 + SLOT, 1)
    # 1 ms at the bottom, 100 ms at the top: 10 ms is half-way
    assert abs(high["height"] - PLOT_H) < 0.1
    assert abs(p50["height"] - PLOT_H / 2) < 0.1
    assert {"1 ms", "10 ms", "100 ms"} <= set(labels(root))
    assert chart.summary == (
        "1 event received from peers in the last 3 hours, from their origin's change to "
        "applied here: p50 10 ms, max 100 ms."
    )


def test_no_latency_says_since_when_it_was_measured() -> None:
    answer = activity([{"at": SINCE + 60, "local": 4}])
    chart = charts.latency_chart(answer)
    assert chart.empty
    assert chart.summary == "No events received from peers in the last 3 hours: no latency to show."
    answer["latency_since"] = SINCE + 7200.0  # the agent started within the window
    assert charts.latency_chart(answer).summary == (
        "No events received from peers since 2027-01-15 07:01 UTC: no latency to show."
    )


def test_latencies_read_as_people_say_them() -> None:
    assert [charts.duration_ms(v) for v in (0.5, 4.25, 40.0, 1000.0, 1500.0, 150_000.0)] == [
        "0.5 ms",
        "4.2 ms",
        "40 ms",
        "1 s",
        "1.5 s",
        "2.5 min",
    ]


def test_the_count_over_time_steps_through_each_change_and_ends_at_the_pool() -> None:
    points = [
        {"at": NOW - 3000, "pool": 10},
        {"at": NOW - 2000, "pool": 7},
        {"at": NOW - 1000, "pool": -1},
    ]
    chart = charts.history_chart(points, NOW)
    root = parsed(chart)
    path = next(root.iter(SVG + "path")).get("d", "")
    # x: a third of the plot per 1000 s; y: -1 to 10 fill the middle four fifths of the
    # plot's 136 units below 10, so that value v is at 10 + 136 * (0.9 - 0.8 * (v + 1) / 11)
    assert path == "M52,23.6H231.3V53.3H410.7V132.4H590"
    dot = next(root.iter(SVG + "circle"))
    assert (dot.get("cx"), dot.get("cy")) == ("590", "132.4")  # now, at the pool
    assert labels(root) == ["-1", "10", "2027-01-15 07:10 UTC", "now"]  # 0 is too near -1
    assert chart.summary == (
        "The count is -1 now; it was 10 on 2027-01-15 07:10 UTC, 2 changes of it since "
        "(lowest -1, highest 10)."
    )


def test_a_count_that_never_moved_is_a_flat_line_at_mid_height_and_zero_shows_when_crossed() -> (
    None
):
    flat = parsed(charts.history_chart([{"at": NOW - 60, "pool": 5}], NOW))
    assert next(flat.iter(SVG + "path")).get("d") == "M52,78H590"
    assert labels(flat)[0] == "5"
    crossed = [{"at": NOW - 60, "pool": 40}, {"at": NOW - 30, "pool": -40}]
    root = parsed(charts.history_chart(crossed, NOW))
    assert labels(root)[:3] == ["-40", "40", "0"]


def test_no_history_is_said_not_drawn() -> None:
    chart = charts.history_chart([], NOW)
    assert chart.empty and chart.summary == "No change held here: nothing to draw over time."
