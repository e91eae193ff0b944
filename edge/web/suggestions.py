"""Suggestions that would lower the bill, each computed from the home's own data (seed 004 UC1
requirement 1): its night-time standby load, the energy it sells cheap and buys back dear, and
the price its car charges at against the cheapest hours after its ready-by time. Each says what
it is based on and what it would save, so the owner can weigh it; none is shown without data.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime

from homeflex.clock import PTU_SECONDS
from homeflex.edge.home import EvConfig, Home
from homeflex.edge.web.history import Bucket
from homeflex.edge.web.plan_view import PlanView

NIGHT_HOURS = range(1, 5)  # local: nobody cooks or washes; what runs is standby
STANDBY_W = 100.0  # below this the night load is a fridge and a router: nothing to gain
MIN_NIGHTS = 3
SOLD_KWH_PER_DAY = 1.0  # less than this sold a day is not worth moving loads for
HOURS_A_YEAR = 8760


@dataclass(frozen=True)
class Suggestion:
    title: str
    detail: str
    saving_eur: float
    per: str  # "a year", "on this charge"


def suggest(home: Home, days: list[Bucket], plan: PlanView | None, now: float) -> list[Suggestion]:
    imp, exp = home.prices.horizon(now - now % PTU_SECONDS, 96)
    import_eur, export_eur = sum(imp) / len(imp), sum(exp) / len(exp)
    out = [
        s
        for s in (
            standby(home, import_eur),
            sold_cheap(
                days,
                import_eur,
                export_eur,
                [d.id for d in home.cfg.devices if d.kind == "appliance"],
            ),
            car_window(home, plan),
        )
        if s is not None
    ]
    return out


def standby(home: Home, import_eur: float) -> Suggestion | None:
    """The house's load at night (the meter less the planned devices), the lowest PTU of each
    night; its median over the nights in the history."""
    offset = home.cfg.site.utc_offset_h * 3600
    nights: dict[str, float] = {}
    for ts, w in home.history.base_load_w.items():
        local = datetime.fromtimestamp(ts + offset, UTC)
        if local.hour in NIGHT_HOURS:
            key = local.date().isoformat()
            nights[key] = min(w, nights.get(key, w))
    if len(nights) < MIN_NIGHTS:
        return None
    night_w = statistics.median(nights.values())
    if night_w < STANDBY_W:
        return None
    per_100 = 0.1 * HOURS_A_YEAR * import_eur
    return Suggestion(
        "Lower the standby load",
        f"At night your home never draws less than about {night_w:.0f} W (the median over "
        f"{len(nights)} nights, without the devices the box plans). Each 100 W less saves about "
        f"{per_100:.0f} € a year at {import_eur:.2f} €/kWh: look for devices left on (a second "
        "fridge, a heated towel rail, old electronics on standby).",
        per_100 * (night_w - STANDBY_W) / 100,
        "a year, down to 100 W",
    )


def sold_cheap(
    days: list[Bucket], import_eur: float, export_eur: float, appliances: list[str]
) -> Suggestion | None:
    """Energy sold at the export price and bought back at the import price over the days."""
    counted = [b for b in days if b.ptus]
    if not counted:
        return None
    sold = sum(b.exported_kwh for b in counted)
    bought = sum(b.imported_kwh for b in counted)
    gap = import_eur - export_eur
    if sold < SOLD_KWH_PER_DAY * len(counted) or gap <= 0:
        return None
    movable = min(sold, bought)
    # what the owner can do: the box's own shiftable appliances, when it plans any
    how = (
        f"Later finish-by times for {', '.join(appliances)} let the planner run them in the sun."
        if appliances
        else "Loads run around midday (washing, dishwashing, charging) use it at home."
    )
    yearly = movable * gap * 365 / len(counted)
    return Suggestion(
        "Use more of your own solar power",
        f"In the last {len(counted)} days your home sold {sold:.1f} kWh and bought "
        f"{bought:.1f} kWh; each kWh sold earns about {export_eur:.2f} € and each kWh bought "
        f"costs {import_eur:.2f} €. {how} Moving all of it would save up to "
        f"{yearly:.0f} € a year.",
        yearly,
        "a year, at most",
    )


def car_window(home: Home, plan: PlanView | None) -> Suggestion | None:
    """The car's charging price in the plan against the cheapest PTUs after its ready-by time,
    for as many PTUs as it charges."""
    if plan is None:
        return None
    for ev in (d for d in home.cfg.devices if isinstance(d, EvConfig)):
        runs = [r for r in plan.runs if r.device == ev.id and r.mean_w > 0]
        kwh = sum(r.energy_kwh for r in runs)
        if kwh <= 0:
            continue
        paid = sum(r.price_eur_kwh * r.energy_kwh for r in runs) / kwh
        ready = home.cfg.site.next_time(plan.start, ev.ready_by)
        after = int((ready - plan.start) // PTU_SECONDS)
        ptus = sum(r.end - r.first for r in runs)
        prices = home.prices.horizon(plan.start, plan.ptus)[0][after:]
        if len(prices) < ptus:
            continue
        cheapest = sum(sorted(prices)[:ptus]) / ptus
        if paid - cheapest < 0.01:
            continue
        saving = (paid - cheapest) * kwh
        return Suggestion(
            f"A later ready-by time for {ev.id}",
            f"The car charges {kwh:.1f} kWh at {paid:.2f} €/kWh on average to be ready by "
            f"{ev.ready_by:%H:%M}. After that time the same hours of charging would cost "
            f"{cheapest:.2f} €/kWh: {saving:.2f} € less on this charge, if the car can wait.",
            saving,
            "on this charge",
        )
    return None
