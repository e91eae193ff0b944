"""The History: energy and cost per day, week and month from a real store and a real price file,
in local time; the CSV export; the SVG bar chart."""

from __future__ import annotations

import csv
import io
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.home import Prices, PriceSource
from homeflex.edge.store import Store
from homeflex.edge.web.history import (
    DEFAULT_COUNT,
    Bucket,
    RecordedPrices,
    bar_chart_svg,
    history,
    to_csv,
)

Q = Quantity
PTU = 900.0
T0 = datetime(2026, 6, 1, tzinfo=UTC).timestamp()  # Monday 1 June 2026, 00:00 UTC
DAY = 86400.0
SVG = "{http://www.w3.org/2000/svg}"

# Three UTC days of data, PTU k from T0 (k = 0 .. 287), readings on every PTU boundary:
# - the meter imports 100 Wh every PTU, but 1000 Wh in k = 94 (1 June 23:30 UTC, i.e. 2 June
#   00:30 at UTC+1), and exports 300 Wh in each PTU from 10:00 to 14:00 UTC (slots 40..55);
# - the PV inverter exports 500 Wh in those PTUs and draws 2 Wh standby in every other one.
# Per UTC day: meter export 16 × 300 = 4.8 kWh, production 16 × 500 = 8.0 kWh.
SUN = range(40, 56)
SPIKE = 94

# Hourly prices for 1 and 2 June (dyadic, so most costs come out exact); 3 June has no prices in
# the file and takes the flat tariff, 0.30 and 0.05 €/kWh.
PRICE_FILE = f"""\
start: 2026-06-01T00:00:00Z
series_step_s: 3600
import_price: {[0.25] * 12 + [0.5] * 12 + [0.125] * 24}
export_price: {[0.0625] * 12 + [0.125] * 12 + [0.0625] * 24}
"""


def counters(device: str, ts: float, imp: float, exp: float) -> list[Reading]:
    return [Reading(device, Q.IMPORT_WH, ts, imp), Reading(device, Q.EXPORT_WH, ts, exp)]


def three_days() -> list[Reading]:
    readings: list[Reading] = []
    m_imp = m_exp = pv_imp = pv_exp = 0.0
    for k in range(3 * 96 + 1):
        ts = T0 + k * PTU
        readings += counters("meter", ts, m_imp, m_exp) + counters("pv", ts, pv_imp, pv_exp)
        # what PTU k adds, seen by the next reading
        sunny = k % 96 in SUN
        m_imp += 1000.0 if k == SPIKE else 100.0
        m_exp += 300.0 if sunny else 0.0
        pv_exp += 500.0 if sunny else 0.0
        pv_imp += 0.0 if sunny else 2.0
    return readings


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store.open(tmp_path_factory.mktemp("history") / "store.db")
    s.write(three_days())
    yield s
    s.close()


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Prices:
    path = tmp_path_factory.mktemp("prices") / "prices.yaml"
    path.write_text(PRICE_FILE)
    p = Prices(PriceSource(file=path, flat_import_eur_per_kwh=0.30, flat_export_eur_per_kwh=0.05))
    assert p.reload(), p.error
    return p


def figures(b: Bucket) -> tuple[str, float, float, float, float, int, bool]:
    return (
        b.label,
        b.imported_kwh,
        b.exported_kwh,
        b.produced_kwh,
        b.used_kwh,
        b.ptus,
        b.estimated,
    )


def test_days_in_utc(store: Store, prices: Prices) -> None:
    days = history(store, "meter", ["pv"], prices, 0, "day", until=T0 + 2 * DAY + 3600, count=4)
    assert [figures(b) for b in days] == [
        ("2026-05-31", 0.0, 0.0, 0.0, 0.0, 0, False),  # before the data: there, with zeros
        ("2026-06-01", 10.5, 4.8, 8.0, 13.7, 96, False),  # 95 × 0.1 + 1.0 imported
        ("2026-06-02", 9.6, 4.8, 8.0, 12.8, 96, False),
        ("2026-06-03", 9.6, 4.8, 8.0, 12.8, 96, False),
    ]
    assert [b.start for b in days] == [date(2026, 5, 31), *(date(2026, 6, d) for d in (1, 2, 3))]
    assert days[1].end == date(2026, 6, 2)
    # Whole Wh times dyadic prices sum exactly. 1 June: 48 PTUs × 0.1 kWh at 0.25 and
    # (47 × 0.1 + 1.0) kWh at 0.5, minus 8 PTUs × 0.3 kWh exported at 0.0625 and 8 at 0.125
    assert days[1].cost_eur == 3.6 == pytest.approx(4.8 * 0.25 + 5.7 * 0.5 - 2.4 * 0.1875)
    assert days[2].cost_eur == 0.9 == pytest.approx(9.6 * 0.125 - 4.8 * 0.0625)
    # 3 June is past the price file: the flat tariff
    assert days[3].cost_eur == pytest.approx(9.6 * 0.30 - 4.8 * 0.05, abs=1e-12)
    assert days[0].cost_eur == 0.0


def test_days_in_local_time(store: Store, prices: Prices) -> None:
    # UTC+1: local 1 June is 31 May 23:00 .. 1 June 23:00 UTC, so the 23:00..24:00 UTC hour of
    # each day, and with it the 1000 Wh PTU at 23:30 UTC, belongs to the next local day.
    days = history(store, "meter", ["pv"], prices, 1, "day", until=T0 + 3 * DAY, count=5)
    assert [figures(b) for b in days] == [
        ("2026-05-31", 0.0, 0.0, 0.0, 0.0, 0, False),
        ("2026-06-01", 9.2, 4.8, 8.0, 12.4, 92, False),  # the data start at 01:00 local
        ("2026-06-02", 10.5, 4.8, 8.0, 13.7, 96, False),  # 0.3 + 1.0 + 9.2 kWh imported
        ("2026-06-03", 9.6, 4.8, 8.0, 12.8, 96, False),
        ("2026-06-04", 0.4, 0.0, 0.0, 0.4, 4, False),  # a partial day: 4 PTUs
    ]
    costs = [b.cost_eur for b in days]
    assert costs == pytest.approx(
        [
            0.0,
            4.8 * 0.25 + 4.4 * 0.5 - 2.4 * 0.0625 - 2.4 * 0.125,  # 2.95
            1.3 * 0.5 + 9.2 * 0.125 - 4.8 * 0.0625,  # 1.5: the 23:00 UTC hour at 1 June's price
            0.4 * 0.125 + 9.2 * 0.30 - 4.8 * 0.05,  # 2.57: half in the file, half flat
            0.4 * 0.30,
        ],
        abs=1e-12,
    )


def test_weeks_and_months_across_a_local_boundary(store: Store, prices: Prices) -> None:
    # UTC−1: the first hour of data, 1 June 00:00..01:00 UTC, is Sunday 31 May locally: the
    # ISO week before and the month before.
    until = T0 + 2 * DAY
    june = ("2026-06", 29.3, 14.4, 24.0, 38.9, 284, False)
    first_hour = (0.4, 0.0, 0.0, 0.4, 4, False)
    weeks = history(store, "meter", ["pv"], prices, -1, "week", until=until, count=3)
    assert [figures(b) for b in weeks] == [
        ("2026-W21", 0.0, 0.0, 0.0, 0.0, 0, False),
        ("2026-W22", *first_hour),
        ("2026-W23", *june[1:]),
    ]
    assert [b.start for b in weeks] == [date(2026, 5, 18), date(2026, 5, 25), date(2026, 6, 1)]
    assert weeks[2].end == date(2026, 6, 8)
    months = history(store, "meter", ["pv"], prices, -1, "month", until=until, count=2)
    assert [figures(b) for b in months] == [("2026-05", *first_hour), june]
    assert [b.start for b in months] == [date(2026, 5, 1), date(2026, 6, 1)]
    # the whole of the data costs 3.6 + 0.9 + 2.64; its first hour (at 0.25) is May's
    assert months[0].cost_eur == 0.4 * 0.25
    assert months[1].cost_eur == pytest.approx(3.6 + 0.9 + 2.64 - 0.1, abs=1e-12)
    assert weeks[1].cost_eur == months[0].cost_eur and weeks[2].cost_eur == months[1].cost_eur
    # UTC+1: every PTU of the data is in June and in week 23
    [week] = history(store, "meter", ["pv"], prices, 1, "week", until=until, count=1)
    assert figures(week) == ("2026-W23", 29.7, 14.4, 24.0, 39.3, 288, False)


def test_labels_and_steps_across_the_year_and_defaults(store: Store, prices: Prices) -> None:
    new_year = datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()  # a Thursday
    [week] = history(store, "meter", [], prices, 0, "week", until=new_year, count=1)
    assert (week.start, week.label) == (date(2025, 12, 29), "2026-W01")  # the ISO year
    months = history(store, "meter", [], prices, 0, "month", until=new_year, count=3)
    assert [b.label for b in months] == ["2025-11", "2025-12", "2026-01"]
    assert all(b.ptus == 0 and b.cost_eur == 0.0 for b in months)
    for period, n in DEFAULT_COUNT.items():
        buckets = history(store, "meter", ["pv"], prices, 0, period, until=T0)
        assert len(buckets) == n and buckets[-1].start == date(2026, 6, 1)
    assert sum(b.imported_kwh for b in history(store, "meter", ["pv"], prices, 0, "month", T0)) == (
        29.7
    )
    # no PV inverter: nothing produced, used = imported − exported
    [day] = history(store, "meter", [], prices, 0, "day", until=T0, count=1)
    assert (day.produced_kwh, day.used_kwh) == (0.0, 10.5 - 4.8)


def test_mistakes_are_refused_with_the_choices(store: Store, prices: Prices) -> None:
    with pytest.raises(ValueError, match="period 'year': use one of day, week, month"):
        history(store, "meter", [], prices, 0, "year", until=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count 0: ask for 1 to"):
        history(store, "meter", [], prices, 0, "day", until=T0, count=0)


def test_a_long_gap_marks_its_day_estimated(tmp_path: Path, prices: Prices) -> None:
    s = Store.open(tmp_path / "gap.db")
    try:
        day1 = [T0 + k * PTU for k in range(97)]
        day2 = [T0 + DAY + k * PTU for k in range(8, 97)]  # readings of 00:00..02:00 lost
        s.write([Reading("meter", Q.IMPORT_WH, ts, (ts - T0) / 9) for ts in day1 + day2])
        days = history(s, "meter", ["pv"], prices, 0, "day", until=T0 + DAY, count=2)
    finally:
        s.close()
    assert [(b.estimated, b.ptus) for b in days] == [(False, 96), (True, 96)]
    assert [b.imported_kwh for b in days] == [9.6, 9.6]  # the gap's energy spread over its PTUs


def test_csv_holds_the_buckets_figures(store: Store, prices: Prices) -> None:
    days = history(store, "meter", ["pv"], prices, 0, "day", until=T0 + 2 * DAY, count=4)
    text = to_csv(days, "day")
    assert text.encode() == (
        b"day_start,label,imported_kwh,exported_kwh,produced_kwh,used_kwh,cost_eur,estimated,ptus\r\n"
        b"2026-05-31,2026-05-31,0.000,0.000,0.000,0.000,0.0000,no,0\r\n"
        b"2026-06-01,2026-06-01,10.500,4.800,8.000,13.700,3.6000,no,96\r\n"
        b"2026-06-02,2026-06-02,9.600,4.800,8.000,12.800,0.9000,no,96\r\n"
        b"2026-06-03,2026-06-03,9.600,4.800,8.000,12.800,2.6400,no,96\r\n"
    )
    for row, b in zip(list(csv.DictReader(io.StringIO(text))), days, strict=True):
        assert float(row["cost_eur"]) == round(b.cost_eur, 4)
        assert float(row["used_kwh"]) == round(b.used_kwh, 3)
    # a tiny negative is 0.000, not -0.000; a week is written as such
    odd = Bucket("week", date(2026, 6, 1), "2026-W23", 1e-5, 2e-5, 0, -1e-5, -1e-6, True, 3)
    assert to_csv([odd], "week").splitlines()[1:] == [
        "2026-06-01,2026-W23,0.000,0.000,0.000,0.000,0.0000,yes,3"
    ]
    assert to_csv([], "month") == (
        "month_start,label,imported_kwh,exported_kwh,produced_kwh,used_kwh,cost_eur,"
        "estimated,ptus\r\n"
    )
    with pytest.raises(ValueError, match="2026-W23 are not per day"):
        to_csv([odd], "day")


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("width") == "100%" and root.get("viewBox")
    for el in root.iter():
        assert el.tag.startswith(SVG) and el.tag != f"{SVG}script", el.tag
        assert "style" not in el.attrib and not any(a.startswith("on") for a in el.attrib)
        assert not any("href" in a for a in el.attrib)  # nothing fetched from anywhere
    return root


def bars(root: ET.Element, kind: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if f"chart-{kind}" in r.get("class", "").split()]


def test_chart_draws_a_bar_per_non_empty_value(store: Store, prices: Prices) -> None:
    days = history(store, "meter", ["pv"], prices, 1, "day", until=T0 + 4 * DAY, count=6)
    root = parse(bar_chart_svg(days))
    title = root.findtext(f"{SVG}title")
    desc = root.findtext(f"{SVG}desc")
    assert title == "Energy used and produced per day, 2026-05-31 to 2026-06-05"
    assert desc is not None
    assert "6 days" in desc and "39.3 kWh used and 24.0 kWh produced" in desc
    assert "Most used: 2026-06-02, 13.7 kWh" in desc and "2 days without data" in desc
    used, produced = bars(root, "used"), bars(root, "produced")
    assert len(used) == sum(b.used_kwh > 0 for b in days) == 4
    assert len(produced) == sum(b.produced_kwh > 0 for b in days) == 3
    assert [r.findtext(f"{SVG}title") for r in used] == [
        "2026-06-01: used 12.400 kWh",
        "2026-06-02: used 13.700 kWh",
        "2026-06-03: used 12.800 kWh",
        "2026-06-04: used 0.400 kWh",
    ]
    # heights in proportion to the values, on one scale
    h = {r.findtext(f"{SVG}title"): float(r.get("height", "")) for r in used + produced}
    assert h["2026-06-02: used 13.700 kWh"] / h["2026-06-04: used 0.400 kWh"] == pytest.approx(
        13.7 / 0.4, rel=1e-3
    )
    legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "Used in the home" in legend and "Produced (solar)" in legend
    assert "estimated" not in legend


def test_chart_thins_its_x_labels_and_keeps_the_newest(store: Store, prices: Prices) -> None:
    days = history(store, "meter", ["pv"], prices, 0, "day", until=T0 + 2 * DAY)  # 31 days
    root = parse(bar_chart_svg(days))
    labels = [t for t in root.iter(f"{SVG}text") if t.get("class") == "chart-xlabel"]
    assert 3 <= len(labels) < 31
    assert labels[-1].text == "3 Jun"
    xs = [float(t.get("x", "")) for t in labels]
    widest = max(len(t.text or "") for t in labels) * 0.62 * 13
    assert min(b - a for a, b in itertools.pairwise(xs)) >= widest
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart-tick"]
    assert ticks[0] == "kWh" and ticks[1] == "0" and len(ticks) >= 4


def test_chart_escapes_text_and_shows_estimates(store: Store, prices: Prices) -> None:
    odd = Bucket("day", date(2026, 6, 1), "<b>&\"'", 2.0, 0.0, 1.0, 3.0, 0.9, True, 96)
    root = parse(bar_chart_svg([odd]))
    assert "<b>&\"'" in (root.findtext(f"{SVG}title") or "")
    [used] = bars(root, "used")
    assert used.get("class") == "chart-used chart-estimated"
    assert used.get("stroke-dasharray")
    assert used.findtext(f"{SVG}title") == "<b>&\"': used 3.000 kWh (partly estimated)"
    assert "1 day partly estimated" in (root.findtext(f"{SVG}desc") or "")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Dashed outline: partly estimated" in texts
    # no data at all: still a valid, described image
    empty = parse(bar_chart_svg([]))
    assert empty.findtext(f"{SVG}title") == "No history to show"


def test_prices_file_is_read_once_per_call(
    store: Store, prices: Prices, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one price lookup for the whole range, not one per PTU or per bucket
    calls: list[tuple[float, int]] = []
    real = prices.horizon

    def counting(start: float, ptus: int) -> tuple[list[float], list[float]]:
        calls.append((start, ptus))
        return real(start, ptus)

    monkeypatch.setattr(prices, "horizon", counting)
    history(store, "meter", ["pv"], prices, 1, "week", until=T0, count=2)
    assert calls == [(T0 - 7 * DAY - 3600, 14 * 96)]


def test_recorded_prices_hold_against_a_later_price_file(tmp_path: Path, prices: Prices) -> None:
    """3 June's PTUs were recorded at 0.5/0.0 €/kWh as they began (Store.record_prices): the
    day costs that, not the flat tariff of the file the box holds now; a PTU not recorded
    falls back to the file."""
    s = Store.open(tmp_path / "store.db")
    try:
        s.write(three_days())
        day3 = T0 + 2 * DAY
        for k in range(95):  # all but the day's last PTU
            s.record_prices(day3 + k * PTU, 0.5, 0.0)
        recorded = RecordedPrices(s, prices)
        imp, exp = recorded.horizon(day3 + 94 * PTU, 3)
        assert (list(imp), list(exp)) == ([0.5, 0.30, 0.30], [0.0, 0.05, 0.05])
        (day,) = history(s, "meter", ["pv"], recorded, 0, "day", until=day3 + 3600, count=1)
    finally:
        s.close()
    assert day.cost_eur == pytest.approx(95 * 0.1 * 0.5 + 0.1 * 0.30 - 0.0, abs=1e-12)
