"""What the neighbourhood is: its homes, its prices, its transformer, its PKI and every
configuration file the processes are started with, all under one work directory.

The homes are drawn from a seeded generator, so every run of the demo simulates the same
neighbourhood: a March weekday in the south of the Netherlands, PV on most roofs, a battery in
every third home, heat pumps in half of them, a commuter's car that charges on one phase
through the night in every fifth home, and in two of five a car that is home only from about
17:00 to 21:00 and must be charged on three phases for an evening trip. The evening, when those
cars charge, is the transformer's peak; its limit is set below that peak so that the DSO has a
congestion to solve.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from homeflex.cloud.xmpp.domain import new_password
from homeflex.cloud.xmpp.embedded import PyjabberAccounts
from homeflex.demo import day_ahead_prices, gateway_config
from homeflex.neighbourhood.telemetry import (
    issue_telemetry_credentials,
    settling_section,
    telemetry_section,
)
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role

DOMAIN = "xmpp.neighbourhood.test"
DAY = date(2026, 3, 10)  # a Tuesday in March: heating in the evening, some sun at noon
AGGREGATOR = "lfa-1"
DSO = "dso-1"
POINT = "trafo-1"
MAX_PRICE = 0.40  # €/kWh the DSO pays at most
TRANSFORMER_KW_PER_HOME = 2.4  # the limit: below the evening peak of these homes' plans
POLL_S = {"meter": 60.0}  # simulated seconds; every other device 120 s
OTHER_POLL_S = 120.0
SITE = {"latitude": 51.44, "longitude": 5.48, "utc_offset_h": 1}


@dataclass(frozen=True)
class Party:
    """An agent's name, credentials directory and XMPP password file."""

    name: str
    creds: Path
    password_file: Path

    @property
    def cert(self) -> Path:
        return self.creds / "cert.pem"


def home_spec(i: int, seed: int = 2026) -> dict[str, Any]:
    """The firmware-sim description of home `i` (0-based)."""
    rng = random.Random(seed * 1000 + i)
    devices: list[dict[str, Any]] = [
        {"id": "meter", "kind": "meter",
         "modbus": {"port": 0, "unit": 1, "template": "meter-3ph"}},
    ]  # fmt: skip
    phases = {"base": 1 + i % 3}
    if i % 4 != 3:
        devices.append({
            "id": "pv", "kind": "pv", "kwp": round(rng.uniform(3.0, 7.0), 1), "tilt": 35,
            "azimuth": rng.choice([150, 180, 210]),
            "modbus": {"port": 0, "unit": 1, "template": "pv-inverter"},
        })  # fmt: skip
    if i % 3 == 0:
        power = rng.choice([3000, 4000, 5000])
        devices.append({
            "id": "battery", "kind": "battery", "capacity_wh": rng.choice([5000, 8000, 10000]),
            "soc_pct": 50, "max_charge_w": power, "max_discharge_w": power,
            "modbus": {"port": 0, "unit": 1, "template": "home-battery"},
        })  # fmt: skip
    if i % 2 == 1:
        devices.append({
            "id": "heatpump", "kind": "heat_pump",
            "rated_power_w": rng.choice([1800, 2200, 2600]), "room_setpoint_c": 20.5,
            "house_ua_w_k": rng.choice([130, 160, 190]), "room_temp_c": 20.0,
            "modbus": {"port": 0, "unit": 1, "template": "heat-pump"},
        })  # fmt: skip
    if i % 5 in (0, 3):
        # An evening trip: the car is home from about 17:00 to 21:00 and must be charged for it
        # on three phases; this is what makes the evening peak a planner cannot move away.
        devices.append({
            "id": "ev", "kind": "ev_charger", "max_current_a": 16, "setpoint_a": 16,
            "visits": [{"arrive": rng.choice(["17:00", "17:30"]), "leave": "21:00",
                        "soc_pct": 45, "capacity_wh": 40000}],
            "modbus": {"port": 0, "unit": 1, "template": "ev-charger"},
        })  # fmt: skip
    elif i % 5 == 2:
        # A commuter's car on a one-phase charger: home from the evening to the morning.
        arrive = f"{rng.choice([17, 18])}:{rng.choice(['00', '30'])}"
        devices.append({
            "id": "ev", "kind": "ev_charger", "max_current_a": 16, "setpoint_a": 16,
            "visits": [{"arrive": arrive, "leave": rng.choice(["07:00", "07:30", "08:00"]),
                        "soc_pct": rng.choice([40, 50, 60]), "capacity_wh": 60000}],
            "modbus": {"port": 0, "unit": 1, "template": "ev-charger"},
        })  # fmt: skip
        phases["ev"] = 1
    return {
        "name": f"home-{i + 1:02d}",
        "seed": seed + i,
        "step_s": 60,  # the physics needs no finer step at the demo's speed
        "site": SITE,
        "weather": {"outdoor_mean_c": 5, "outdoor_amplitude_c": 5, "cloudiness": 0.4},
        "base_load": {"annual_kwh": round(rng.uniform(2800, 4800))},
        "phases": phases,
        "devices": devices,
    }


def day_start(day: date = DAY) -> datetime:
    """The market day runs from midnight to midnight UTC (01:00 to 01:00 local)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class Neighbourhood:
    """The work directory's layout and the parties in it."""

    workdir: Path
    homes: int
    day: date = DAY

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def prices_file(self) -> Path:
        return self.workdir / "prices.yaml"

    def home_names(self) -> list[str]:
        return [f"home-{i + 1:02d}" for i in range(self.homes)]

    def home_dir(self, name: str) -> Path:
        return self.workdir / "homes" / name

    def party(self, name: str) -> Party:
        return Party(name, self.pki / name, self.pki / name / "xmpp-password")

    @property
    def limit_kw(self) -> float:
        return round(TRANSFORMER_KW_PER_HOME * self.homes, 1)

    # --- set-up ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """PKI, XMPP accounts, the home descriptions and the price file."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        root, fleet_dir = self.pki / "root", self.pki / "fleet"
        root.mkdir(parents=True)
        fleet_dir.mkdir()
        passphrase = secrets.token_urlsafe(24).encode()  # used once, here, then forgotten
        init_root(root, passphrase, "Neighbourhood Root CA")
        fleet = init_fleet(root, passphrase, fleet_dir, "Neighbourhood Fleet CA")
        try:
            issue_credentials(
                fleet, Identity("xmpp", Role.SERVICE, dns=(DOMAIN,)), self.pki / "xmpp"
            )
            (self.workdir / "xmpp").mkdir()
            accounts = PyjabberAccounts(self.workdir / "xmpp" / "pyjabber.db", DOMAIN)
            parties = [(AGGREGATOR, Role.AGGREGATOR), (DSO, Role.DSO)]
            parties += [(name, Role.HOME) for name in self.home_names()]
            for name, role in parties:
                p = self.party(name)
                issue_credentials(fleet, Identity(name, role, xmpp=f"{name}@{DOMAIN}"), p.creds)
                password = new_password()
                p.password_file.write_text(password + "\n")
                p.password_file.chmod(0o600)
                accounts.add_account(f"{name}@{DOMAIN}", password)
            issue_telemetry_credentials(fleet, self.pki)
        finally:
            fleet.close()
        start = day_start(self.day) - timedelta(days=1)
        self.prices_file.write_text(yaml.safe_dump(day_ahead_prices(start, days=3)))
        for i, name in enumerate(self.home_names()):
            d = self.home_dir(name)
            d.mkdir(parents=True)
            (d / "home.yaml").write_text(yaml.safe_dump(home_spec(i), sort_keys=False))

    def xmpp_config(self) -> dict[str, Any]:
        base = self.workdir / "xmpp"
        return {
            "domain": DOMAIN,
            "listen": "127.0.0.1",
            "port": 0,
            "credentials": str(self.pki / "xmpp"),
            "database": str(base / "pyjabber.db"),
            "security_log": str(base / "security.jsonl"),
        }

    def gateway_config(
        self, name: str, endpoints: dict[str, Any], xmpp_port: int, mqtt_port: int
    ) -> dict[str, Any]:
        """The installer's configuration for home `name`, on the simulator's endpoints: the
        one-home demo's, with the demo's polling, the neighbourhood's prices and the agent."""
        d = self.home_dir(name)
        cfg = gateway_config(endpoints, d / "home.yaml", d)
        cfg["gateway_id"] = name
        for dev in cfg["devices"]:
            dev["poll_s"] = POLL_S.get(dev["id"], OTHER_POLL_S)
        home = cfg["home"]
        home["prices"] = {"file": str(self.prices_file)}
        home["cycle_s"] = 120  # simulated seconds; a PTU lasts under 2 s of real time
        home["solve_time_limit_s"] = 2.0
        one_phase = yaml.safe_load((d / "home.yaml").read_text()).get("phases", {})
        for dev in home["devices"]:
            if dev["kind"] == "ev" and dev["id"] in one_phase:
                dev["phases"] = 1
        party = self.party(name)
        cfg["credentials"] = str(party.creds)  # for XMPP and MQTT alike
        cfg["telemetry"] = telemetry_section(mqtt_port)
        cfg["agent"] = {
            "xmpp_domain": DOMAIN,
            "xmpp_port": xmpp_port,
            "password_file": str(party.password_file),
            "aggregator": AGGREGATOR,
            "aggregator_certificate": str(self.party(AGGREGATOR).cert),
            "offer_from": "17:00",
            "offer_until": "21:00",
        }
        return cfg

    def platform_config(self, xmpp_port: int, answer_window_s: float) -> dict[str, Any]:
        """`homeflex cloud run`'s configuration: the aggregator of every home, and the DSO."""
        agg, dso = self.party(AGGREGATOR), self.party(DSO)
        return {
            "xmpp": {"domain": DOMAIN, "address": "127.0.0.1", "port": xmpp_port},
            "state_dir": str(self.workdir / "cloud"),
            "aggregators": [
                {
                    "credentials": str(agg.creds),
                    "password_file": str(agg.password_file),
                    "congestion_point": POINT,
                    "dso": {"name": DSO, "certificate": str(dso.cert)},
                    "homes": {n: str(self.party(n).cert) for n in self.home_names()},
                    "prices": {"file": str(self.prices_file)},
                    "day_ahead_at": None,  # the demo opens its one round itself
                    "answer_window_s": answer_window_s,
                    **settling_section(self.workdir),
                }
            ],
            "dso": {
                "credentials": str(dso.creds),
                "password_file": str(dso.password_file),
                "max_price": MAX_PRICE,
                "offer_window_s": 30,
                "points": [
                    {
                        "name": POINT,
                        "limit_kw": self.limit_kw,
                        "aggregators": {AGGREGATOR: str(agg.cert)},
                    }
                ],
            },
        }

    def credentials(self, name: str) -> Credentials:
        return Credentials.load(self.party(name).creds)
