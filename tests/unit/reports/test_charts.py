"""The inline SVG charts: well-formed, one element per value, values kept in data attributes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from reports.charts import svg
from reports.model import Bar, BarChart, HistogramChart, LineChart, Marker, Series

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def with_class(root: ET.Element, css: str) -> list[ET.Element]:
    return [e for e in root.iter() if css in (e.get("class") or "").split()]


values = st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=40)


@given(values, st.integers(min_value=0, max_value=5))
def test_a_line_chart_draws_every_point_and_every_marker(points: list[float], markers: int) -> None:
    series = Series("rollout", tuple((T0 + timedelta(minutes=i), v) for i, v in enumerate(points)))
    marks = tuple(Marker(T0 + timedelta(minutes=i), f"rollback {i}") for i in range(markers))
    root = parse(svg(LineChart("rollout", "Rollout", "%", (series,), marks, step=True, y_max=100)))
    drawn = with_class(root, "point")
    assert [float(p.get("data-y", "nan")) for p in drawn] == [float(f"{v:g}") for v in points]
    assert len(with_class(root, "rollback")) == markers
    for point in drawn:  # inside the plotting area
        assert 0 <= float(point.get("cx", "-1")) <= 760
        assert 0 <= float(point.get("cy", "-1")) <= 300


def test_a_higher_value_is_drawn_higher_on_the_line_chart() -> None:
    series = Series("s", ((T0, 10.0), (T0 + timedelta(hours=1), 50.0)))
    root = parse(svg(LineChart("c", "C", "%", (series,), y_max=100)))
    low, high = with_class(root, "point")
    assert float(high.get("cy", "0")) < float(low.get("cy", "0"))  # SVG y grows downwards
    assert float(high.get("cx", "0")) > float(low.get("cx", "0"))


def test_a_rollback_marker_names_its_version_in_its_tooltip() -> None:
    series = Series("s", ((T0, 25.0), (T0 + timedelta(hours=2), 0.0)))
    marker = Marker(T0 + timedelta(hours=1), "v4 rollback by health-monitor: p99 doubled")
    root = parse(svg(LineChart("c", "C", "%", (series,), (marker,), step=True)))
    (drawn,) = with_class(root, "rollback")
    title = drawn.find("s:title", NS)
    assert title is not None
    assert "v4 rollback" in (title.text or "")


@given(
    st.dictionaries(
        st.sampled_from(["v1", "v2"]),
        st.lists(st.integers(min_value=0, max_value=1000), min_size=8, max_size=8),
        min_size=1,
    )
)
def test_a_histogram_draws_one_bar_per_nonempty_bin_per_pool(counts: dict[str, list[int]]) -> None:
    edges = tuple(float(2**i) for i in range(9))
    chart = HistogramChart(
        "latency", "Latency", "ms", edges, {k: tuple(v) for k, v in counts.items()}
    )
    root = parse(svg(chart))
    bars = with_class(root, "bar")
    expected = sorted((pool, n) for pool, row in counts.items() for n in row if n)
    assert sorted((b.get("data-pool", ""), int(b.get("data-count", "0"))) for b in bars) == expected


def test_histogram_bars_are_as_tall_as_their_share_of_the_pool() -> None:
    edges = (1.0, 10.0, 100.0)
    root = parse(svg(HistogramChart("h", "H", "ms", edges, {"v1": (30, 10), "v2": (1, 3)})))
    heights = {
        (b.get("data-pool"), b.get("data-lo")): float(b.get("height", "0"))
        for b in with_class(root, "bar")
    }
    # v1 has 75 % in its first bin, v2 75 % in its second: the same height.
    assert abs(heights[("v1", "1")] - heights[("v2", "10")]) < 0.2
    assert heights[("v1", "1")] > heights[("v1", "10")]


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["match", "value_mismatch", "v2_error"]),
            st.integers(min_value=0, max_value=500),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_stacked_bars_keep_every_count_of_every_bucket(buckets: list[dict[str, int]]) -> None:
    bars = tuple(Bar(T0 + timedelta(hours=i), parts) for i, parts in enumerate(buckets))
    chart = BarChart("categories", "C", "n", bars, ("match", "value_mismatch", "v2_error"))
    root = parse(svg(chart))
    drawn: dict[str, int] = {}
    for rect in with_class(root, "bar"):
        drawn[rect.get("data-x", "")] = drawn.get(rect.get("data-x", ""), 0) + int(
            rect.get("data-count", "0")
        )
    expected = {bar.at.isoformat(): sum(bar.parts.values()) for bar in bars}
    assert drawn == {k: v for k, v in expected.items() if v}


def test_an_empty_chart_says_there_is_no_data() -> None:
    root = parse(svg(BarChart("categories", "C", "n", (), ())))
    assert with_class(root, "empty")
    assert not with_class(root, "bar")


def test_text_from_the_ledger_is_escaped_in_the_svg() -> None:
    series = Series("<script>", ((T0, 1.0),))
    marker = Marker(T0, 'rollback by "x" & <y>')
    text = svg(LineChart("c", "a < b", "%", (series,), (marker,)))
    parse(text)  # still well-formed XML
    assert "<script>" not in text
