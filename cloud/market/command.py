"""`homeflex cloud market`: run a clearing method and a payment rule on an instance file and print
the result as JSON. The instance formats are in docs/market-instances.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from homeflex.cloud.market.mies import Instance as System
from homeflex.configfile import ConfigError, parse_config


class _Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BidsInstance(_Instance):
    """One round of bids for a registry clearing method (e.g. the local flexibility market)."""

    kind: Literal["bids"]
    method: str = "lfm-impact"
    payment: str | None = None
    participants: list[str] | None = Field(
        None, description="who may bid; a bid from anyone else is refused"
    )
    bids: list[Any] = Field(description="each checked on its own: a bad one is refused, not fatal")


class DsoInstance(_Instance):
    """A DSO's flexibility request, given as is or as a prognosis against a transformer limit,
    and the offers against it."""

    kind: Literal["dso"]
    request: dict[str, Any] | None = None
    prognosis_kw: list[float] | None = None
    limit_kw: float | None = Field(None, gt=0)
    max_price: float | None = Field(None, ge=0)
    buyer: str = "dso"
    period_h: float = Field(0.25, gt=0)
    offers: list[Any]


class SystemInstance(_Instance):
    """A multi-carrier system for seed 001's coordination methods: generators and prosumers
    with their full models, coordinated over the horizon."""

    kind: Literal["system"]
    method: str = "co-optimization"
    options: dict[str, Any] = Field(
        default_factory=dict, description="the method's settings, e.g. max_iterations"
    )
    system: System


Instance = BidsInstance | DsoInstance | SystemInstance
KINDS: dict[str, type[BidsInstance] | type[DsoInstance] | type[SystemInstance]] = {
    "bids": BidsInstance,
    "dso": DsoInstance,
    "system": SystemInstance,
}


def load_instance(path: Path) -> Instance:
    """The instance in a YAML or JSON file (JSON is YAML); ConfigError naming file, line and
    field."""
    try:
        text = path.read_text(encoding="utf-8")
        head = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    kind = head.get("kind") if isinstance(head, dict) else None
    if kind not in KINDS:
        raise ConfigError(f"{path}: `kind` must be one of {', '.join(KINDS)}, not {kind!r}")
    return parse_config(text, KINDS[kind], str(path))


def run_bids(inst: BidsInstance, method: str | None, payment: str | None) -> dict[str, Any]:
    from homeflex.cloud.market.objects import parse_bids
    from homeflex.cloud.market.payments import Welfare, pay
    from homeflex.cloud.market.registry import method as find

    clearing = find(method or inst.method)
    bids, refused = parse_bids(inst.bids, set(inst.participants) if inst.participants else None)
    result = clearing.clear(bids)
    out: dict[str, Any] = {"result": result.model_dump(mode="json")}
    out["result"]["refused"] = [r.model_dump() for r in refused] + out["result"]["refused"]
    rule = payment or inst.payment
    if rule is not None:
        out["payments"] = pay(rule, result, Welfare(clearing, bids)).model_dump(mode="json")
    return out


def run_dso(inst: DsoInstance) -> dict[str, Any]:
    from homeflex.cloud.market.dso import congestion_request, procure
    from homeflex.cloud.market.objects import FlexOffer, FlexRequest, Refusal

    if inst.request is not None:
        request = FlexRequest.model_validate(inst.request)
    elif inst.prognosis_kw is not None and inst.limit_kw is not None and inst.max_price is not None:
        request = congestion_request(
            inst.prognosis_kw,
            inst.limit_kw,
            request_id="request",
            buyer=inst.buyer,
            max_price=inst.max_price,
        )
    else:
        raise click.UsageError(
            "a dso instance needs `request`, or `prognosis_kw`, `limit_kw` and `max_price`"
        )
    offers, refused = [], []
    for n, raw in enumerate(inst.offers):
        try:
            offers.append(FlexOffer.model_validate(raw))
        except ValidationError as exc:
            name = str(raw.get("id", f"#{n}")) if isinstance(raw, dict) else f"#{n}"
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "offer"
                refused.append(Refusal(bid=name, field=field, message=err["msg"]))
    got = procure(request, offers, period_h=inst.period_h)
    out: dict[str, Any] = {
        "request": request.model_dump(mode="json"),
        "accepted_kw": got.accepted,
        "cost_eur": got.cost_eur,
        "shortfall_kw": got.shortfall_kw,
        "status": got.status,
        "refused": [r.model_dump() for r in refused + got.refused],
        "result": got.result().model_dump(mode="json"),
    }
    if inst.prognosis_kw is not None:
        out["prognosis_after_kw"] = got.apply(inst.prognosis_kw)
    return out


def _plain(value: Any) -> Any:
    """Arrays and numpy numbers as JSON's lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def run_system(inst: SystemInstance, method: str | None) -> dict[str, Any]:
    """The method's result; for any method but co-optimization also the optimum it is measured
    against and its cost gap (co-optimization is the fastest of the three)."""
    from homeflex.cloud.market.coordination import run
    from homeflex.cloud.market.registry import OptionError

    name = method or inst.method
    try:
        result = run(name, inst.system, **inst.options)
    except OptionError as exc:
        raise click.UsageError(f"options for {exc}") from None
    d = result.dispatch
    out: dict[str, Any] = {
        "method": result.method,
        "status": result.status,
        "cost_eur": result.cost,
        "prices": _plain(result.prices),
        "iterations": result.iterations,
        "messages": result.messages,
        "seconds": result.seconds,
        "primal_residual": result.primal_residual,
        "dual_residual": result.dual_residual,
        "details": _plain(result.details),
        "dispatch": {
            "generators": _plain(d.generators),
            "prosumers_net": {n: _plain(p.net) for n, p in d.prosumers.items()},
        },
    }
    if name != "co-optimization":
        best = run("co-optimization", inst.system)
        out["co_optimization_cost_eur"] = best.cost
        out["gap_pct"] = (result.cost - best.cost) / abs(best.cost) * 100 if best.cost else None
    return out


@click.group("market")
def market() -> None:
    """Clearing methods, payment rules and settlement of the aggregator's market."""


@market.command("methods")
def methods_cmd() -> None:
    """List the clearing methods and payment rules by name."""
    from homeflex.cloud.market.payments import RULES
    from homeflex.cloud.market.registry import coordination_methods, methods

    click.echo("clearing methods: " + ", ".join(sorted(methods())) + ", dso-procurement")
    click.echo("coordination:     " + ", ".join(sorted(coordination_methods())) + " (kind: system)")
    click.echo("payment rules:    " + ", ".join(sorted(RULES)))


@market.command("clear")
@click.argument("instance_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--method", help="a clearing method (default: the instance's)")
@click.option("--payment", help="a payment rule (`homeflex cloud market methods` lists them)")
def clear_cmd(instance_path: Path, method: str | None, payment: str | None) -> None:
    """Clear INSTANCE_PATH (YAML or JSON, see docs/market-instances.md); JSON on stdout."""
    from homeflex.cloud.market.payments import PaymentError

    try:
        inst = load_instance(instance_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if isinstance(inst, DsoInstance):
            out = run_dso(inst)
        elif isinstance(inst, SystemInstance):
            if payment is not None:
                raise click.UsageError("a system instance has no payment rule")
            out = run_system(inst, method)
        else:
            out = run_bids(inst, method, payment)
    except (KeyError, PaymentError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    click.echo(json.dumps(out, indent=1, sort_keys=True))
