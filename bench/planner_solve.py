"""Planner benchmark: solve time and gap reached over 50 random typical homes (battery, EV, heat
pump, three appliances per day, PV) for 96, 192 and 288 PTUs, with the machine it ran on.
Also the time to work out a one-hour up/down envelope.
Usage: python -m bench.planner_solve [--homes 50] [--ptus 96 192 288] [--gap 0.005]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.machine import machine
from homeflex.edge.planner.flexibility import envelope
from homeflex.edge.planner.forecast import clear_sky_shape
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.planner import NoPlan, solve

START = datetime(2026, 3, 20, tzinfo=UTC)  # midnight UTC, an equinox day in the Netherlands
LATITUDE, LONGITUDE = 52.1, 5.1
APPLIANCES = {  # W per PTU of the cycle, and the usual window (hours of the day)
    "washer": ([2000.0, 2000.0, 300.0, 300.0, 300.0, 300.0, 800.0, 100.0], (9, 18)),
    "dishwasher": ([1800.0, 1800.0, 150.0, 150.0, 1800.0, 200.0], (13, 30)),
    "dryer": ([2500.0] * 6, (10, 22)),
}


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def home(rng: random.Random, ptus: int, gap: float) -> PlanInputs:
    days = math.ceil(ptus / 96)
    hour = [t / 4 for t in range(ptus)]
    # day-ahead-like prices: night trough, morning and evening peaks, a midday solar dip, noise
    import_price = [
        0.22
        + 0.08 * math.exp(-(((h % 24) - 8) ** 2) / 4)
        + 0.12 * math.exp(-(((h % 24) - 19) ** 2) / 5)
        - 0.10 * math.exp(-(((h % 24) - 13) ** 2) / 6)
        - 0.05 * (1 < h % 24 < 5)
        + rng.gauss(0, 0.02)
        for h in hour
    ]
    export_price = [p - 0.15 for p in import_price]  # spot minus taxes: negative at the dip
    pv_w = [
        s * rng.uniform(3000, 8000) * rng.uniform(0.4, 1.0)
        for s in clear_sky_shape(START.timestamp(), ptus, LATITUDE, LONGITUDE)
    ]
    base = [250 + 350 * math.exp(-(((h % 24) - 19) ** 2) / 6) + rng.uniform(0, 150) for h in hour]
    devices: list[dict[str, Any]] = [
        {"kind": "pv", "id": "pv", "forecast_w": pv_w},
        {
            "kind": "battery",
            "id": "battery",
            "capacity_wh": rng.choice([5000, 10000, 13500]),
            "soc_start_pct": rng.uniform(20, 80),
            "max_charge_w": 3000,
            "max_discharge_w": 3000,
            "cycle_cost_eur_per_kwh": 0.02,
            "soc_end_min_pct": 20,
        },
        {
            "kind": "ev",
            "id": "ev",
            "arrive": at(rng.uniform(0, 1)),
            "depart": at(rng.uniform(7, 8) + 24 * (days - 1)),
            "energy_needed_wh": rng.uniform(5000, 25000),
        },
        {
            "kind": "heat_pump",
            "id": "heat_pump",
            "rated_power_w": 2500,
            "min_power_w": 800,
            "resistance_k_per_kw": rng.uniform(4, 8),
            "capacitance_kwh_per_k": rng.uniform(4, 10),
            "outdoor_temp_c": [6 + 5 * math.sin((h - 9) / 24 * 2 * math.pi) for h in hour],
            "room_temp_c": rng.uniform(19.5, 21),
            "t_min_c": [20.0 if 6 <= h % 24 < 23 else 17.0 for h in hour],
            "t_max_c": [23.0] * ptus,
            "min_on_ptus": 2,
            "min_off_ptus": 2,
        },
    ]
    for day in range(days):
        for name, (profile, (first, last)) in APPLIANCES.items():
            finish = min(24 * day + last, ptus / 4)
            if finish - len(profile) / 4 >= 24 * day + first:
                devices.append(
                    {
                        "kind": "appliance",
                        "id": f"{name}-{day}",
                        "profile_w": profile,
                        "earliest_start": at(24 * day + first),
                        "latest_finish": at(finish),
                    }
                )
    return PlanInputs.model_validate(
        {
            "start": START,
            "ptus": ptus,
            "import_price": import_price,
            "export_price": export_price,
            "base_load_w": base,
            "devices": devices,
            "relative_gap": gap,
        }
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run(homes: int, ptus: int, gap: float) -> None:
    rng = random.Random(ptus)
    solve_s, total_s, gaps, gaps_eur, statuses = [], [], [], [], []
    for _ in range(homes):
        inputs = home(rng, ptus, gap)
        began = time.perf_counter()
        try:
            plan = solve(inputs)
        except NoPlan:
            # the time limit passed with no plan handed back: counted at the limit
            total_s.append(time.perf_counter() - began)
            solve_s.append(inputs.time_limit_s)
            statuses.append("none")
            continue
        total_s.append(time.perf_counter() - began)
        solve_s.append(plan.solve_s)
        gaps.append(plan.gap)
        gaps_eur.append(plan.gap_eur)
        statuses.append(plan.status)
    print(
        f"{ptus:3d} PTUs, {homes} homes: solve median {statistics.median(solve_s):.3f} s, "
        f"p95 {percentile(solve_s, 0.95):.3f} s, max {max(solve_s):.3f} s | with model build "
        f"median {statistics.median(total_s):.3f} s, p95 {percentile(total_s, 0.95):.3f} s | "
        f"gap reached (target {gap:g} or 0.01 €): median {statistics.median(gaps or [0]):.2g}, "
        f"max {max(gaps, default=0):.2g} ({max(gaps_eur, default=0):.3f} €); "
        f"{statuses.count('optimal')} "
        f"optimal, {statuses.count('feasible')} time-limited with a plan, "
        f"{statuses.count('none')} time-limited without one"
    )


def run_envelope(homes: int, hours: int) -> None:
    """The up/down envelope of the evening peak (from 17:00), as an aggregator would ask it."""
    rng = random.Random(1)
    took = []
    for _ in range(homes):
        inputs = home(rng, 96, PlanInputs.model_fields["relative_gap"].default)
        began = time.perf_counter()
        envelope(inputs, list(range(68, 68 + 4 * hours)))
        took.append(time.perf_counter() - began)
    print(
        f"envelope of {hours} h ({4 * hours} PTUs, 1 + {8 * hours} solves), {homes} homes of 96 "
        f"PTUs: median {statistics.median(took):.2f} s, max {max(took):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--homes", type=int, default=50)
    parser.add_argument("--ptus", type=int, nargs="+", default=[96, 192, 288])
    parser.add_argument(
        "--envelope-homes", type=int, default=10, help="homes for the envelope figure (0: skip)"
    )
    parser.add_argument(
        "--gap", type=float, default=PlanInputs.model_fields["relative_gap"].default
    )
    args = parser.parse_args()
    print(machine())
    for ptus in args.ptus:
        run(args.homes, ptus, args.gap)
    if args.envelope_homes:
        run_envelope(args.envelope_homes, hours=1)


if __name__ == "__main__":
    main()
