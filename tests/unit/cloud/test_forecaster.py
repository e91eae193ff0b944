"""The forecaster: clear-sky PV and the household profile with values (night, solar noon, a
June day's yield, a day's and a year's energy), its brain's answers and refusals (an unknown
site, another home's site), and one request and answer between Nodes in real envelopes."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from homeflex.agents.delivery import Deliveries
from homeflex.agents.messages import Ack, Forecast, ForecastRequest, Prices
from homeflex.agents.messenger import Messenger
from homeflex.agents.node import Node, Outgoing
from homeflex.agents.permissions import Permissions
from homeflex.cloud.forecast.brain import ForecasterBrain
from homeflex.cloud.forecast.load_profile import day_factor, load_kw
from homeflex.cloud.forecast.pv import pv_kw
from homeflex.cloud.forecast.site import Site
from homeflex.pki.identity import Identity, Role
from homeflex.security import SecurityLog
from tests.fakeclock import FakeClock
from tests.pki_fixtures import CredsFactory
from tests.unit.agents.conftest import BOX, DOMAIN
from tests.unit.agents.test_node import Recorder, carry, node

UTRECHT = Site(latitude=52.09, longitude=5.12, kwp=4.0, annual_kwh=3500)
JUNE = date(2026, 6, 21)  # a Sunday
PTU_H = 0.25


def ptu_of(hour_utc: float) -> int:
    """The PTU of the (UTC) day that holds `hour_utc`: the messages' days are UTC days."""
    return int(hour_utc / PTU_H)


def test_pv_is_zero_at_night_and_peaks_at_solar_noon() -> None:
    pv = pv_kw(UTRECHT, JUNE)
    assert len(pv) == 96
    # sunrise in Utrecht on 21 June is about 03:20 UTC, sunset about 20:05 UTC
    assert pv[: ptu_of(3.0)] == [0.0] * 12 and pv[ptu_of(20.5) :] == [0.0] * 14
    # solar noon at 5.12° E: 12:00 − 5.12 × 4 min − the equation of time (−1.7 min) ≈ 11:41 UTC
    peak = max(range(96), key=lambda i: pv[i])
    assert abs((peak + 0.5) * PTU_H - (12 - 5.12 * 4 / 60 + 1.7 / 60)) <= 0.25
    assert max(pv) <= UTRECHT.kwp


def test_a_clear_june_day_yields_what_a_cloudless_day_gives() -> None:
    # a cloudless 21 June at 52° N: about 11.6 kWh/m² above the atmosphere on a horizontal
    # plane, some 0.7 of it through a clear sky (≈ 8 kWh/m²), times a performance ratio of
    # 0.85: 6 to 7.5 kWh per kWp. (The month's mean, clouds included, is lower: 4 to 5.)
    kwh = sum(pv_kw(UTRECHT, JUNE)) * PTU_H
    assert 6.0 * UTRECHT.kwp <= kwh <= 7.5 * UTRECHT.kwp
    december = sum(pv_kw(UTRECHT, date(2026, 12, 21))) * PTU_H
    assert 0.3 * UTRECHT.kwp <= december <= 1.2 * UTRECHT.kwp  # short, low winter days
    none = Site(latitude=52.09, longitude=5.12, kwp=0, annual_kwh=3500)
    assert pv_kw(none, JUNE) == [0.0] * 96


def test_load_sums_to_the_day_share_of_the_annual_use() -> None:
    for day in (JUNE, date(2026, 6, 22), date(2026, 1, 14), date(2026, 10, 3)):
        factor = day_factor(day)
        assert 0.8 <= factor <= 1.2
        kwh = sum(load_kw(UTRECHT, day)) * PTU_H
        assert kwh == pytest.approx(UTRECHT.annual_kwh / 365 * factor, abs=0.005)
    assert day_factor(date(2026, 1, 1)) == pytest.approx(1.2)
    assert day_factor(date(2026, 7, 2)) == pytest.approx(0.8, abs=1e-4)
    year = [date(2026, 1, 1) + timedelta(days=n) for n in range(365)]
    total = sum(sum(load_kw(UTRECHT, d)) for d in year) * PTU_H
    assert total == pytest.approx(UTRECHT.annual_kwh, abs=0.5)


def test_load_has_a_low_night_and_the_evening_peak_in_local_time() -> None:
    monday = date(2026, 6, 22)
    load = load_kw(UTRECHT, monday)
    mean = sum(load) / 96
    night, evening = load[ptu_of(3.0)], max(load[ptu_of(17) : ptu_of(21)])
    assert night < 0.8 * mean and evening > 1.6 * mean
    assert max(range(96), key=lambda i: load[i]) in range(ptu_of(18), ptu_of(20))
    # the same household two hours ahead of UTC peaks two hours earlier on the UTC clock
    summer_time = Site(**{**UTRECHT.model_dump(), "utc_offset_h": 2.0})
    shifted = load_kw(summer_time, monday)
    assert shifted[ptu_of(10) : ptu_of(22)] == load[ptu_of(12) :]


def test_the_brain_answers_the_sender_for_its_own_site_and_alike_when_asked_again() -> None:
    brain = ForecasterBrain("forecast-1", {"home-1": UTRECHT})
    request = ForecastRequest(day=JUNE, series=["pv", "load"])
    ack, out = brain.on_message("home-1", request, 0.0)
    assert ack == Ack(status="ok")
    (answer,) = out
    assert isinstance(answer.message, Forecast) and answer.to == "home-1"
    assert answer.message.day == JUNE and answer.message.first_ptu == 0
    assert answer.message.pv_kw == pv_kw(UTRECHT, JUNE)
    assert answer.message.load_kw == load_kw(UTRECHT, JUNE)
    again = brain.on_message("home-1", request, 5.0)
    assert again == (ack, out)  # same request, same answer, same delivery key
    assert answer.key == "forecast:home-1:home-1:2026-06-21:load+pv"
    (pv_only,) = brain.on_message("home-1", ForecastRequest(day=JUNE, series=["pv"]), 0.0)[1]
    assert isinstance(pv_only.message, Forecast) and pv_only.message.load_kw is None
    assert pv_only.message.pv_kw == answer.message.pv_kw


def test_an_unknown_site_and_another_homes_site_are_refused_alike() -> None:
    sites = {"home-1": UTRECHT, "home-2": UTRECHT.model_copy(update={"readers": {"agr-1"}})}
    brain = ForecasterBrain("forecast-1", sites)
    ack, out = brain.on_message("home-9", ForecastRequest(day=JUNE, series=["load"]), 0.0)
    assert ack.status == "refused" and out == []
    assert "unknown site 'home-9' for home-9" in ack.detail
    ack, out = brain.on_message("home-1", ForecastRequest(day=JUNE, series=["load"],
                                                          site="home-2"), 0.0)  # fmt: skip
    assert ack.status == "refused" and out == []
    assert "unknown site 'home-2' for home-1" in ack.detail  # not told that home-2 exists
    # the home's aggregator, a reader of its site, may have it
    ack, out = brain.on_message("agr-1", ForecastRequest(day=JUNE, series=["load"],
                                                         site="home-2"), 0.0)  # fmt: skip
    assert ack.status == "ok" and out[0].to == "agr-1"
    prices = Prices(round="r", day=JUNE, import_eur_kwh=[0.2], export_eur_kwh=[0.1], answer_by=0)
    ack, _ = brain.on_message("home-1", prices, 0.0)
    assert ack.status == "refused" and "not prices" in ack.detail


def test_a_request_and_its_forecast_travel_in_envelopes(
    creds: CredsFactory, tmp_path: Path
) -> None:
    """The forecaster learns the home from its envelope (no peer list), answers with an ack
    and the forecast, delivered until the home acknowledges it."""
    clock = FakeClock(float(int(time.time())))
    who = Identity("forecast-1", Role.FORECASTER, xmpp=f"forecast-1@{DOMAIN}")
    c = creds(who)
    messenger = Messenger(c, Permissions(who), SecurityLog(tmp_path / "f.log"),
                          tmp_path / "f-replay.db", clock=clock)  # fmt: skip
    brain = ForecasterBrain(who.name, {BOX.name: UTRECHT})
    forecaster = Node(messenger, Deliveries(tmp_path / "f-deliveries.db"), brain)
    home = node(creds, BOX, tmp_path, clock, aggregator="agg-1")
    home.messenger.know(list(forecaster.messenger.sender.chain))
    assert isinstance(home.brain, Recorder)
    request = ForecastRequest(day=JUNE, series=["pv"])
    home.brain.to_send = [Outgoing(who.name, request, key="forecast-request:1")]
    answers = carry(home.tick(clock.t), home, forecaster, clock.t)
    assert len(answers) == 2  # the ack of the request, the forecast
    acks = carry(answers, forecaster, home, clock.t)
    assert home.brain.delivered == ["forecast-request:1"]
    ((sender, got),) = home.brain.seen
    assert sender == who.name and isinstance(got, Forecast) and got.pv_kw == pv_kw(UTRECHT, JUNE)
    assert carry(acks, home, forecaster, clock.t) == []
    assert forecaster.deliveries.pending() == []  # the forecast was acknowledged
