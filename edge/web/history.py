"""The History of the homeowner's page: energy imported, exported, produced and used in the home,
and what it cost, per day, week or month in the home's local time; as CSV, and as a bar chart
drawn on the server (an inline SVG: no script, nothing fetched, fine under `default-src 'self'`).

Everything comes from the store's PTU aggregates: one read per device over the whole range and
one price lookup, summed in one pass, so a year of 15-minute history answers quickly on the box.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Literal, Protocol

from homeflex.clock import PTU_SECONDS

Period = Literal["day", "week", "month"]

DEFAULT_COUNT: dict[Period, int] = {"day": 31, "week": 26, "month": 12}
"""How many buckets the page shows by default: a month of days, half a year of weeks, a year."""

MAX_COUNT = 400  # buckets: more than a year of days; a bigger request is a mistake, not a view


class PtuPrices(Protocol):
    """What the History needs of prices (homeflex.edge.home.Prices is one): import and export
    €/kWh for each PTU from `start`."""

    def horizon(self, start: float, ptus: int) -> tuple[Sequence[float], Sequence[float]]: ...


class PtuSource(Protocol):
    """What the History needs of the store (homeflex.edge.store.Store is one)."""

    def ptu_rows(
        self, device: str, start: float, end: float
    ) -> list[tuple[int, float, float, int]]: ...


class PriceRecord(Protocol):
    def prices(self, start: float, end: float) -> dict[int, tuple[float, float]]: ...


class RecordedPrices:
    """The prices recorded for past PTUs as they began (Store.record_prices), and `fallback`'s
    (the price file the box holds now, or its flat tariff) where none was recorded: the box was
    off then, or the PTU has not begun."""

    def __init__(self, record: PriceRecord, fallback: PtuPrices) -> None:
        self.record = record
        self.fallback = fallback

    def horizon(self, start: float, ptus: int) -> tuple[Sequence[float], Sequence[float]]:
        imp, exp = (list(x) for x in self.fallback.horizon(start, ptus))
        for ms, (i, e) in self.record.prices(start, start + ptus * PTU_SECONDS).items():
            t = round((ms / 1000 - start) / PTU_SECONDS)
            if 0 <= t < ptus:
                imp[t], exp[t] = i, e
        return imp, exp


@dataclass(frozen=True, slots=True)
class Bucket:
    """One day, week or month of the home, in local time, from `start` (a local date).

    imported/exported: at the grid meter; produced: by the PV inverters; used: in the home
    (imported − exported + produced); cost: € paid for import minus € earned for export, each
    PTU at its own prices. `estimated` when any PTU in it was partly interpolated; `ptus` is the
    number of PTUs the meter has data for (a day has 96), so a partial bucket shows as such."""

    period: Period
    start: date
    label: str
    imported_kwh: float
    exported_kwh: float
    produced_kwh: float
    used_kwh: float
    cost_eur: float
    estimated: bool
    ptus: int

    @property
    def end(self) -> date:
        """The first local date after this bucket."""
        return _next_start(self.period, self.start)


def _check(period: str, count: int) -> None:
    if period not in DEFAULT_COUNT:
        raise ValueError(f"period {period!r}: use one of {', '.join(DEFAULT_COUNT)}")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count {count}: ask for 1 to {MAX_COUNT} buckets")


def _period_start(period: Period, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day.replace(day=1)


def _next_start(period: Period, start: date) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def _back(period: Period, start: date, n: int) -> date:
    """The start of the bucket `n` buckets before the one starting at `start`."""
    if period == "day":
        return start - timedelta(days=n)
    if period == "week":
        return start - timedelta(days=7 * n)
    months = start.year * 12 + start.month - 1 - n
    return date(months // 12, months % 12 + 1, 1)


def label(period: Period, start: date) -> str:
    """The bucket's name: 2026-06-01, 2026-W23 (ISO week, its ISO year), 2026-06."""
    if period == "day":
        return start.isoformat()
    if period == "week":
        iso = start.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{start.year}-{start.month:02d}"


def _instant(day: date, offset_s: float) -> float:
    """Unix time of local midnight at the start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - offset_s


def history(
    store: PtuSource,
    meter_id: str,
    pv_ids: Sequence[str],
    prices: PtuPrices,
    utc_offset_h: float,
    period: Period,
    until: float,
    count: int | None = None,
) -> list[Bucket]:
    """The `count` buckets (default DEFAULT_COUNT[period]) ending with the one that holds the
    instant `until`, oldest first; buckets without data are there with zeros (ptus=0) so the
    chart has no holes. A PTU belongs to the bucket its start falls in, in local time.

    Reads the store: call it where the store may be used (one call at a time). `prices` is
    taken as it is: reload a Prices first if its file may have changed."""
    n = DEFAULT_COUNT.get(period, 1) if count is None else count
    _check(period, n)
    offset_s = utc_offset_h * 3600
    last = _period_start(period, datetime.fromtimestamp(until + offset_s, UTC).date())
    starts = [_back(period, last, i) for i in range(n - 1, -1, -1)]
    bounds = [_instant(d, offset_s) for d in [*starts, _next_start(period, last)]]
    begin, end = bounds[0], bounds[-1]

    # One price lookup for the whole range, from the first PTU that starts in it (local midnight
    # is on a PTU boundary for every real offset; an odd one would start mid-PTU).
    first_ptu = math.ceil(begin / PTU_SECONDS) * PTU_SECONDS
    imp_price, exp_price = prices.horizon(first_ptu, math.ceil((end - first_ptu) / PTU_SECONDS))

    imported = [0.0] * n  # Wh until the end, divided once: sums of whole Wh stay exact
    exported = [0.0] * n
    produced = [0.0] * n
    cost = [0.0] * n  # € × 1000 (Wh × €/kWh)
    estimated = [False] * n
    ptus = [0] * n

    # Rows come oldest first: walk the bucket bounds along with them, once.
    bounds_ms = [b * 1000 for b in bounds]
    first_ms, ptu_ms = first_ptu * 1000, PTU_SECONDS * 1000
    b, next_bound = 0, bounds_ms[1]
    for start_ms, imp, exp, est in store.ptu_rows(meter_id, begin, end):
        while start_ms >= next_bound:
            b += 1
            next_bound = bounds_ms[b + 1]
        t = round((start_ms - first_ms) / ptu_ms)
        imported[b] += imp
        exported[b] += exp
        cost[b] += imp * imp_price[t] - exp * exp_price[t]
        estimated[b] |= bool(est)
        ptus[b] += 1
    for pv in pv_ids:
        b, next_bound = 0, bounds_ms[1]
        for start_ms, imp, exp, est in store.ptu_rows(pv, begin, end):
            while start_ms >= next_bound:
                b += 1
                next_bound = bounds_ms[b + 1]
            # An inverter's production is its export; at night it draws a little (import), which
            # is part of the home's use, seen by the meter: it does not make production negative.
            made = exp - imp
            if made > 0:
                produced[b] += made
            estimated[b] |= bool(est)

    return [
        Bucket(
            period=period,
            start=start,
            label=label(period, start),
            imported_kwh=imported[i] / 1000,
            exported_kwh=exported[i] / 1000,
            produced_kwh=produced[i] / 1000,
            used_kwh=(imported[i] - exported[i] + produced[i]) / 1000,
            cost_eur=cost[i] / 1000,
            estimated=estimated[i],
            ptus=ptus[i],
        )
        for i, start in enumerate(starts)
    ]


CSV_COLUMNS = (
    "label",
    "imported_kwh",
    "exported_kwh",
    "produced_kwh",
    "used_kwh",
    "cost_eur",
    "estimated",
    "ptus",
)


def to_csv(buckets: Sequence[Bucket], period: Period) -> str:
    """The buckets as CSV (RFC 4180: comma, CRLF): a header, then one line per bucket with its
    start as an ISO date, kWh to 3 decimals, € to 4, estimated as yes/no."""
    wrong = [b.label for b in buckets if b.period != period]
    if wrong:
        raise ValueError(f"buckets {', '.join(wrong)} are not per {period}; export one period")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([f"{period}_start", *CSV_COLUMNS])
    for b in buckets:
        # `z`: a tiny negative rounds to 0.000, not -0.000
        w.writerow(
            [
                b.start.isoformat(),
                b.label,
                f"{b.imported_kwh:z.3f}",
                f"{b.exported_kwh:z.3f}",
                f"{b.produced_kwh:z.3f}",
                f"{b.used_kwh:z.3f}",
                f"{b.cost_eur:z.4f}",
                "yes" if b.estimated else "no",
                b.ptus,
            ]
        )
    return out.getvalue()


# --- the bar chart --------------------------------------------------------------------------------

# In viewBox units. 400 wide: on a phone about as wide as the screen, so 13-unit text stays
# readable; on a wide screen it scales up with the page.
WIDTH, HEIGHT = 400, 250
LEFT, RIGHT, BOTTOM = 44, 16, 22
FONT = 13
CHAR_W = 0.62 * FONT  # a rough width of a digit or letter, to keep x labels apart
USED_FILL = "#0b5394"  # dark blue, 7.6:1 on white: the page's accent colour
PRODUCED_FILL = "#f2b705"  # light amber: far lighter than the blue, apart in greyscale too
PRODUCED_STROKE = "#6b4f00"  # its outline gives the pale bar 3:1 against white
INK, GRID = "#111111", "#bbbbbb"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _short(b: Bucket) -> str:
    """The x label: short, since a phone has little room (each bar's tooltip has the full one)."""
    if b.period == "day":
        return f"{b.start.day} {MONTHS[b.start.month - 1]}"
    if b.period == "week":
        return f"W{b.start.isocalendar().week}"
    return MONTHS[b.start.month - 1] if b.start.month != 1 else f"Jan {b.start.year}"


def _scale(top: float) -> tuple[float, int]:
    """A round gridline step for values up to `top`, and how many steps reach it (3 to 5)."""
    raw = max(top, 1.0) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    return step, max(1, math.ceil(top / step - 1e-9))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def bar_chart_svg(buckets: Sequence[Bucket]) -> str:
    """An inline SVG: per bucket a bar for the energy used in the home (left, dark blue) and one
    for the energy produced (right, amber, outlined), on a kWh scale with gridlines; buckets with
    estimated data have dashed outlines. No styles: presentation attributes give the look, and
    class names (chart, chart-grid, chart-axis, chart-tick, chart-xlabel, chart-used,
    chart-produced, chart-estimated, chart-legend) let the stylesheet change it."""
    e = escape
    if not buckets:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 40" width="100%"'
            f' role="img" class="chart" font-family="system-ui, sans-serif" font-size="{FONT}">'
            "<title>No history to show</title><desc>There is no data for this period.</desc>"
            f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" fill="{INK}">No data</text></svg>'
        )
    period = buckets[0].period
    n = len(buckets)
    any_estimated = any(b.estimated for b in buckets)
    top_y = 46 if any_estimated else 30  # room for the legend's one or two lines
    bottom_y = HEIGHT - BOTTOM
    plot_h = bottom_y - top_y
    peak = max(max(b.used_kwh, b.produced_kwh) for b in buckets)
    step, steps = _scale(peak)
    y_max = step * steps

    def y(v: float) -> float:
        return bottom_y - plot_h * max(0.0, v) / y_max

    used = sum(b.used_kwh for b in buckets)
    made = sum(b.produced_kwh for b in buckets)
    most = max(buckets, key=lambda b: b.used_kwh)
    empty = sum(1 for b in buckets if b.ptus == 0 and b.produced_kwh == 0)
    title = f"Energy used and produced per {period}, {buckets[0].label} to {buckets[-1].label}"
    desc = (
        f"Bar chart of {_plural(n, period)}: for each, a dark blue bar on the left for the energy "
        f"used in the home and an amber bar on the right for the energy the solar panels "
        f"produced, in kWh. In total {used:.1f} kWh used and {made:.1f} kWh produced."
    )
    if most.used_kwh > 0:
        desc += f" Most used: {most.label}, {most.used_kwh:.1f} kWh."
    if empty:
        desc += f" {_plural(empty, period)} without data."
    if any_estimated:
        desc += f" {_plural(sum(b.estimated for b in buckets), period)} partly estimated."

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%"'
        f' role="img" class="chart" font-family="system-ui, sans-serif" font-size="{FONT}"'
        f' fill="{INK}">',
        f"<title>{e(title)}</title>",
        f"<desc>{e(desc)}</desc>",
    ]

    # Legend, with words: the colours are never the only way to tell the bars apart.
    out.append('<g class="chart-legend">')
    out.append(f'<rect x="{LEFT + 8}" y="8" width="12" height="12" fill="{USED_FILL}"/>')
    out.append(f'<text x="{LEFT + 24}" y="19">Used in the home</text>')
    out.append(
        f'<rect x="{LEFT + 168}" y="8" width="12" height="12" fill="{PRODUCED_FILL}"'
        f' stroke="{PRODUCED_STROKE}"/>'
    )
    out.append(f'<text x="{LEFT + 184}" y="19">Produced (solar)</text>')
    if any_estimated:
        out.append(
            f'<rect x="{LEFT + 8}" y="26" width="12" height="12" fill="none" stroke="{INK}"'
            ' stroke-dasharray="3 2"/>'
        )
        out.append(f'<text x="{LEFT + 24}" y="37">Dashed outline: partly estimated</text>')
    out.append("</g>")

    # Gridlines with their values; the unit over the value column.
    out.append(
        f'<text class="chart-tick" x="{LEFT - 4}" y="{top_y - 8}" text-anchor="end">kWh</text>'
    )
    for i in range(steps + 1):
        v = i * step
        gy = _num(y(v))
        out.append(
            f'<line class="chart-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy}" y2="{gy}"'
            f' stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text class="chart-tick" x="{LEFT - 4}" y="{_num(y(v) + 4)}"'
            f' text-anchor="end">{e(f"{v:g}")}</text>'
        )
    out.append(
        f'<line class="chart-axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom_y}"'
        f' y2="{bottom_y}" stroke="{INK}" stroke-width="1"/>'
    )

    slot = (WIDTH - LEFT - RIGHT) / n
    bar_w = min(24.0, slot * 0.38)
    # Every k-th label from the newest, so the newest is always named and none overlap.
    # A label too wide for the right margin is pulled left to fit: leave room for that too.
    widest = max(len(_short(b)) for b in buckets) * CHAR_W
    pulled = max(0.0, widest / 2 - RIGHT - slot / 2)
    every = max(1, math.ceil((widest + 6 + pulled) / slot))
    for i, b in enumerate(buckets):
        mid = LEFT + slot * (i + 0.5)
        for value, x, kind, fill, stroke in (
            (b.used_kwh, mid - bar_w - 0.5, "used", USED_FILL, USED_FILL),
            (b.produced_kwh, mid + 0.5, "produced", PRODUCED_FILL, PRODUCED_STROKE),
        ):
            if value <= 0:
                continue  # nothing to draw: no zero-height bar for a screen reader to find
            top = y(value)
            cls = f"chart-{kind}" + (" chart-estimated" if b.estimated else "")
            dash = ' stroke-dasharray="3 2"' if b.estimated else ""
            note = " (partly estimated)" if b.estimated else ""
            out.append(
                f'<rect class="{cls}" x="{_num(x)}" y="{_num(top)}" width="{_num(bar_w)}"'
                f' height="{_num(bottom_y - top)}" fill="{fill}" stroke="{stroke}"{dash}>'
                f"<title>{e(f'{b.label}: {kind} {value:.3f} kWh{note}')}</title></rect>"
            )
        if (n - 1 - i) % every == 0:
            text = _short(b)
            half = len(text) * CHAR_W / 2
            x = min(max(mid, half + 1), WIDTH - half - 1)  # inside the viewBox, never cut off
            out.append(
                f'<text class="chart-xlabel" x="{_num(x)}" y="{HEIGHT - 6}"'
                f' text-anchor="middle">{e(text)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)
