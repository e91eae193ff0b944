"""What each platform agent tells its operator: `status.json` in its state directory, rewritten
every few seconds by `homeflex cloud run` (atomically), read by people, monitoring and the demo.

An aggregator's status names its homes (the operator runs them); the DSO's holds only what the
DSO itself knows: sums per congestion point and its orders to aggregators. Both show their
latest settlements from their ledgers (per order: delivered kWh, payment, penalty); the
aggregator also what the DSO settled of its own orders, and the meter sums it sent the DSO.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from homeflex.agents.node import Brain, Node
from homeflex.cloud.aggregator.brain import AggregatorBrain
from homeflex.cloud.dso.brain import DsoBrain
from homeflex.cloud.market.objects import Direction
from homeflex.cloud.market.settlement import Entry, Ledger, SettlementRecord

LATEST = 200  # ledger entries shown: the status is rewritten every few seconds, the ledger grows


def status(node: Node, brain: Brain) -> dict[str, Any]:
    """The agent's status (call where the brain runs: NodeAgent.work)."""
    out: dict[str, Any] = {
        "name": node.name,
        "messages": {"sent": node.sent, "resent": node.resent, "failed": node.failed},
    }
    if isinstance(brain, AggregatorBrain):
        out.update(aggregator_status(brain))
    elif isinstance(brain, DsoBrain):
        out.update(dso_status(brain))
    return out


def aggregator_status(brain: AggregatorBrain) -> dict[str, Any]:
    rounds = []
    for r in brain.store.summaries():
        held = brain.rounds.get(r["id"]) or brain.store.load(r["id"])
        rounds.append(
            {**r, "closed": r["closed_at"] is not None,
             "missing": [] if held is None else held.missing()}
        )  # fmt: skip
    ledger = brain.settling.ledger if brain.settling else None
    entries = latest(ledger)
    return {
        "congestion_point": brain.congestion_point,
        "settlements": settlements(entries),
        "metered": [e.data() for e in entries if e.kind == "metered"],
        "dso_settlements": {
            oid: s.model_dump(mode="json") for oid, s in sorted(brain.dso_settlements.items())
        },
        "rounds": rounds,
        "requests": [
            {
                "id": rid,
                "day": f.request.day.isoformat(),
                "offered_kw": sum(b.kw for b in f.offer.blocks),
                "orders": {
                    dso_order: {home: o.profile_kw for home, o in sorted(per_home.items())}
                    for dso_order, per_home in f.orders.items()
                },
            }
            for rid, f in brain.flex.items()
        ],
    }


def dso_status(brain: DsoBrain) -> dict[str, Any]:
    checks = []
    for c in brain.checks:
        orders = []
        for got in c.procurements.values():
            for o in got.orders():
                kwh = sum(o.profile_kw.values()) * got.period_h
                orders.append(
                    {"id": o.id, "aggregator": o.participant, "direction": o.direction.value,
                     "kw": o.profile_kw, "price": o.price, "kwh": kwh, "eur": kwh * o.price}
                )  # fmt: skip
        asked: dict[int, float] = {}  # PTU → kW: + less load (up), - more load (down)
        for r in c.requests.values():
            sign = 1.0 if r.direction == Direction.UP else -1.0
            asked |= {t: sign * kw for t, kw in r.profile_kw.items()}
        checks.append(
            {
                "point": c.point.name,
                "day": c.day.isoformat(),
                "generation": c.generation,
                "limit_kw": c.point.limit_kw,
                "prognosis_kw": c.prognosis_kw(),
                "after_kw": c.after_kw(),
                "request_kw": dict(sorted(asked.items())),
                "orders": orders,
                "safe": c.safe,
            }
        )
    return {"checks": checks, "settlements": settlements(latest(brain.ledger))}


def latest(ledger: Ledger | None) -> list[Entry]:
    """The ledger's last LATEST entries, oldest first."""
    if ledger is None:
        return []
    rows = ledger.db.execute(
        "SELECT seq, ts, kind, body, prev, hash FROM ledger ORDER BY seq DESC LIMIT ?", (LATEST,)
    ).fetchall()
    return [Entry(*row) for row in reversed(rows)]


def settlements(entries: list[Entry]) -> list[dict[str, Any]]:
    """Each settlement entry as order, participant, kWh delivered and short, € paid, penalty."""
    out = []
    for e in entries:
        if e.kind != "settlement":
            continue
        r = SettlementRecord.model_validate(e.data())
        out.append(
            {"order": r.order, "participant": r.participant, "delivered_kwh": r.delivered_kwh,
             "shortfall_kwh": r.shortfall_kwh, "payment_eur": r.payment_eur,
             "penalty_eur": r.penalty_eur, "net_eur": r.net_eur}
        )  # fmt: skip
    return out


def write_status(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
