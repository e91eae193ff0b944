"""Validate on an LV feeder: the power flow of the aggregators' D-prognoses on the CIGRE LV
residential feeder, the relief each violated PTU needs (enough, and not much more), export that
no relief clears, and the DSO buying the relief and validating again until the feeder is safe."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest
import yaml

from homeflex.agents.messages import DPrognosis, FlexOffer, FlexOrder, FlexRequest, OfferBlock
from homeflex.cloud.dso.brain import CongestionPoint, DsoBrain
from homeflex.cloud.dso.feeder import DOWN, RELIEF_STEPS, UP, Feeder
from homeflex.cloud.market.grid import power_flow, residential_loads_kw
from homeflex.cloud.market.objects import Direction
from homeflex.cloud.platform import PlatformConfig
from homeflex.configfile import ConfigError, load_config

# other homes: CIGRE's residential loads at 80 %, except where the aggregators' homes are
BUSES = {"agr-1": "R18", "agr-2": "R11"}
OTHER_KW = {b: 0.8 * kw for b, kw in residential_loads_kw().items() if b not in BUSES.values()}
# agr-1 at the far end of the feeder: its evening peak pulls R18 under 0.9 p.u.; PTU 7 exports
AGR1 = [30.0, 30.0, 90.0, 110.0, 130.0, -150.0, -250.0, -400.0]
AGR2 = [10.0, 10.0, 40.0, 40.0, 40.0, 0.0, 0.0, 0.0]


def feeder(ptus: int) -> Feeder:
    return Feeder(BUSES, {b: [kw] * ptus for b, kw in OTHER_KW.items()})


def violated(loads: dict[str, Sequence[float]]) -> set[int]:
    loads = {b: list(s) for b, s in loads.items()}
    return {v.period for v in power_flow(loads).violations}


def moved(t: int, kw: float, direction: Direction) -> dict[str, list[float]]:
    """The feeder's loads in PTU `t` with `kw` of the aggregators' load (up) or export (down)
    taken off, each aggregator by the same share of its own."""
    own = {"agr-1": AGR1[t], "agr-2": AGR2[t]}
    movable = {a: max(x, 0.0) if direction == UP else max(-x, 0.0) for a, x in own.items()}
    share = kw / sum(movable.values())
    sign = 1.0 if direction == UP else -1.0
    loads = {b: [x] for b, x in OTHER_KW.items()}
    for agg, x in own.items():
        loads[BUSES[agg]] = [x - sign * share * movable[agg]]
    return loads


def test_the_relief_clears_each_violated_ptu_and_a_kw_less_would_not() -> None:
    check = feeder(len(AGR1)).check({"agr-1": AGR1, "agr-2": AGR2})
    # before: R18 under 0.9 p.u. in the evening PTUs, over 1.1 p.u. when 400 kW flow back
    assert {v.period for v in check.violations} == {2, 3, 4, 7}
    assert {(v.period, v.element, v.name) for v in check.violations} >= {
        (2, "bus", "Bus R18"), (3, "bus", "Bus R18"), (4, "bus", "Bus R18"), (7, "bus", "Bus R18")
    }  # fmt: skip
    assert all(v.value > 1.1 for v in check.violations if v.period == 7)
    # the evening asks for less load, the back-flow for less export (more load)
    assert sorted(check.relief_kw[UP]) == [2, 3, 4] and list(check.relief_kw[DOWN]) == [7]
    assert check.unrelieved == []
    for direction, relief in check.relief_kw.items():
        for t, kw in relief.items():
            movable = abs(AGR1[t]) + abs(AGR2[t]) if direction == UP else -AGR1[t]
            assert 0 < kw < movable
            assert violated(moved(t, kw, direction)) == set()
            # the bisection's step is 1/128 of the load: a kW less (and the step) fails
            step = movable / 2**RELIEF_STEPS
            assert violated(moved(t, kw - step - 1.0, direction)) == {0}
    # the deeper the evening peak, the more relief
    assert check.relief_kw[UP][2] < check.relief_kw[UP][3] < check.relief_kw[UP][4]


def test_what_the_aggregators_cannot_clear_is_reported_and_asks_for_nothing() -> None:
    # other homes draw 600 kW at R1: the 0.5 MVA transformer is overloaded whatever they do
    check = Feeder(BUSES, {"R1": [600.0, 100.0]}).check({"agr-1": [20.0] * 2, "agr-2": [0.0] * 2})
    assert [(v.period, v.element) for v in check.violations] == [(0, "trafo")]
    assert check.unrelieved == [0] and check.relief_kw == {UP: {}, DOWN: {}}


def test_a_feeder_within_its_limits_needs_nothing() -> None:
    check = feeder(2).check({"agr-1": AGR1[:2], "agr-2": AGR2[:2]})
    assert check.ok and check.relief_kw == {UP: {}, DOWN: {}} and check.unrelieved == []


def test_a_feeder_that_cannot_be_checked_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"agr-1: load point 'R99' is not on the feeder; use R1"):
        Feeder({"agr-1": "R99"})
    with pytest.raises(ValueError, match=r"R7: load point 'R7' is not on the feeder"):
        Feeder(BUSES, {"R7": [1.0]})
    with pytest.raises(ValueError, match=r"no load point configured for aggregator agr-3"):
        feeder(2).check({"agr-3": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"R1: 2 PTUs, the D-prognoses have 3"):
        feeder(2).check({"agr-1": [1.0] * 3})


# --- the DSO ---------------------------------------------------------------------------------

DAY = date(2026, 1, 15)
T0 = 1_768_000_000.0
EVENING = range(76, 80)  # 19:00-20:00
LIMIT_KW = 450.0  # the transformer carries the evening: only the feeder's voltage is short


def prognosis(agg: str, net_kw: list[float], rnd: str) -> DPrognosis:
    return DPrognosis(round=rnd, day=DAY, congestion_point="feeder-1", net_kw=net_kw, homes=10)


def test_the_dso_buys_the_feeders_relief_and_validates_again_until_it_is_safe() -> None:
    grid = Feeder(BUSES, {b: [kw] * 96 for b, kw in OTHER_KW.items()})
    other = tuple(sum(OTHER_KW.values()) for _ in range(96))
    point = CongestionPoint("feeder-1", LIMIT_KW, frozenset(BUSES), other, feeder=grid)
    dso = DsoBrain("dso-1", [point], max_price=0.25)
    load = {
        "agr-1": [110.0 if t in EVENING else 30.0 for t in range(96)],
        "agr-2": [40.0 if t in EVENING else 10.0 for t in range(96)],
    }
    before = [sum(x) for x in zip(other, *load.values(), strict=True)]
    assert max(before) < LIMIT_KW
    # agr-2's homes are cheaper, but at R11, where a kW lifts R18's voltage less
    prices = {"agr-1": 0.12, "agr-2": 0.05}
    floor = {"agr-1": 30.0, "agr-2": 20.0}  # what their homes cannot do without
    out = []
    for agg, series in sorted(load.items()):
        ack, more = dso.on_message(agg, prognosis(agg, series, f"{agg}.r0"), T0)
        assert ack.status == "ok"
        out += more
    asked: list[dict[int, float]] = []
    while requests := [o.message for o in out if isinstance(o.message, FlexRequest)]:
        assert len(asked) < 3, f"still asking after three validations: {asked}"
        check = dso.check("feeder-1", DAY)
        assert check is not None and check.grid is not None
        assert check.generation == len(asked)
        # only the feeder asks: the request is its relief, in the PTUs it found violated
        request = requests[0]
        assert {r.id for r in requests} == {request.id}  # the same request to both
        assert request.profile_kw == check.grid.relief_kw[UP]
        assert set(request.profile_kw) <= set(EVENING)
        asked.append(request.profile_kw)
        out = []
        for agg in sorted(load):  # each offers what its homes can still give
            blocks = [
                OfferBlock(ptu=t, direction="up", kw=load[agg][t] - floor[agg], price=prices[agg])
                for t in request.profile_kw
                if load[agg][t] > floor[agg]
            ]
            offer = FlexOffer(round=f"{agg}.r0", id=f"{agg}.o{len(asked)}", day=DAY,
                              request=request.id, blocks=blocks)  # fmt: skip
            ack, more = dso.on_message(agg, offer, T0 + len(asked))
            assert ack.status == "ok"
            out += more
        for o in out:  # the homes will hold their orders
            if isinstance(o.message, FlexOrder):
                for t, kw in o.message.profile_kw.items():
                    load[o.to][t] -= kw
    # after each purchase the DSO ran the power flow again on what the homes will draw then
    final = dso.check("feeder-1", DAY)
    assert final is not None and final.safe is True and final.grid is not None and final.grid.ok
    assert final.generation == 2 and final.requests == {}
    held = final.by_aggregator_kw()
    assert held == {a: pytest.approx(kw) for a, kw in load.items()}
    # the first purchase took all of agr-2's cheap kW: they help less where they are, so the
    # second validation asked for what was still missing, less than the first time, and
    # bought it from agr-1
    assert len(asked) == 2
    assert set(asked[1]) == set(asked[0]) and all(asked[1][t] < asked[0][t] for t in asked[1])
    for t in EVENING:
        assert load["agr-2"][t] == pytest.approx(20.0)
        assert load["agr-1"][t] == pytest.approx(110.0 - asked[0][t] + 20.0 - asked[1][t])
    total = [sum(x) for x in zip(other, *load.values(), strict=True)]
    assert max(total) < max(before)


# --- its configuration -----------------------------------------------------------------------


def dso_config(tmp_path: Path, feeder: dict[str, object]) -> Path:
    path = tmp_path / "agents.yaml"
    point = {"name": "feeder-1", "limit_kw": 450, "feeder": feeder,
             "aggregators": {"agr-1": "agr-1.pem", "agr-2": "agr-2.pem"}}  # fmt: skip
    config = {
        "xmpp": {"domain": "xmpp.test"},
        "state_dir": str(tmp_path / "state"),
        "dso": {
            "credentials": "dso",
            "password_file": "pw",
            "max_price": 0.25,
            "points": [point],
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path


def test_the_platform_reads_the_feeder_of_a_point(tmp_path: Path) -> None:
    evening = [0.0] * 76 + [20.0] * 4 + [0.0] * 16
    feeder = {"buses": {"agr-1": "R18", "agr-2": "R11"},
              "other_load_kw": {"R1": 150.0, "R15": evening}, "v_min": 0.95}  # fmt: skip
    cfg = load_config(dso_config(tmp_path, feeder), PlatformConfig)
    assert cfg.dso is not None
    point = cfg.dso.points[0].congestion_point()
    assert point.feeder is not None and point.feeder.buses == BUSES
    assert point.feeder.other_load_kw == {"R1": [150.0] * 96, "R15": evening}
    assert (point.feeder.v_min, point.feeder.v_max) == (0.95, 1.1)
    # the transformer's own check counts the other homes too
    assert point.other_load_kw[0] == 150.0 and point.other_load_kw[77] == 170.0


@pytest.mark.parametrize(
    ("feeder", "expected"),
    [
        ({"buses": {"agr-1": "R18", "agr-2": "R7"}},
         r"agents.yaml:\d+: dso.points.0.feeder.buses.agr-2: Input should be 'R1', 'R11'"),
        ({"buses": {"agr-1": "R18"}},
         r"point feeder-1: feeder.buses names agr-1; give a load point for each of its "
         r"aggregators \(agr-1, agr-2\)"),
        ({"buses": {"agr-1": "R18", "agr-2": "R11"}, "other_load_kw": {"R1": [1.0] * 95}},
         r"other_load_kw: Value error, R1: 95 values; give one kW or one per PTU \(96\)"),
    ],
)  # fmt: skip
def test_a_bad_feeder_is_refused_naming_the_field(
    tmp_path: Path, feeder: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(dso_config(tmp_path, feeder), PlatformConfig)
