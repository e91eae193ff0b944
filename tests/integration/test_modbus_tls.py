"""Modbus/TCP Security: the gateway reads a firmware-sim meter over mutual TLS with certificates
from our PKI, and every impostor, stranger and plaintext peer is turned away with a clear error —
plus a security event when the gateway is the one refusing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from homeflex.clock import ScaledClock
from homeflex.edge.config import GatewayConfig
from homeflex.edge.devices.capabilities import DeviceError, Quantity
from homeflex.edge.devices.modbus import ModbusDevice, ModbusLink
from homeflex.edge.devices.modbus_tls import ModbusTls
from homeflex.edge.gateway import Gateway
from homeflex.edge.poller import Poller
from homeflex.pki.bundle import Credentials, issue_credentials
from homeflex.pki.ca import FleetCA
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import client_context
from homeflex.security import SecurityLog, read_events, verify_chain
from homeflex_sim.homefile import HomeFileError, load_home
from homeflex_sim.tls import server_context
from tests.integration.simhome import SimHome, run_sim
from tests.pki_fixtures import make_fleet

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
METER = Identity("meter-1", Role.DEVICE, dns=("meter-1",), ips=("127.0.0.1",))


@dataclass
class Pki:
    gateway: Credentials  # the box: Role.HOME, valid
    revoked_gateway: Credentials  # another box whose certificate was revoked
    files: dict[str, Credentials]  # each simulated device's credentials, by device id
    crl: Path  # the revocation list the devices check clients against


@pytest.fixture(scope="module")
def pki(fleet_ca: FleetCA, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("modbus-pki")
    other = make_fleet(base / "other")  # another CA with the very same names
    try:
        files = {
            "meter": issue_credentials(fleet_ca, METER, base / "meter"),
            # a stranger's device claiming the meter's name and address
            "battery": issue_credentials(other, METER, base / "battery"),
            # ours, but named for another device (no IP address either)
            "ev": issue_credentials(
                fleet_ca, Identity("ev-1", Role.DEVICE, dns=("ev-1",)), base / "ev"
            ),
            # ours and named right, but revoked
            "hp": issue_credentials(
                fleet_ca, Identity("hp-1", Role.DEVICE, ips=("127.0.0.1",)), base / "hp"
            ),
            # ours and named right, but a service (its key could sit on any server), not a device
            "pv": issue_credentials(
                fleet_ca, Identity("pv-1", Role.SERVICE, ips=("127.0.0.1",)), base / "pv"
            ),
        }
    finally:
        other.close()
    gateway = issue_credentials(fleet_ca, Identity("box-1", Role.HOME), base / "box-1")
    revoked_gateway = issue_credentials(fleet_ca, Identity("box-2", Role.HOME), base / "box-2")
    fleet_ca.revoke(files["hp"].certificate().serial_number, "key compromise")
    fleet_ca.revoke(revoked_gateway.certificate().serial_number, "box stolen")
    crl = fleet_ca.publish_crl()
    shutil.copy(crl, gateway.crl_path)  # what the box's next CRL fetch would bring
    device_crl = base / "devices-crl.pem"
    shutil.copy(crl, device_crl)
    return Pki(gateway, revoked_gateway, files, device_crl)


def _tls(creds: Credentials, crl: Path) -> dict[str, str]:
    return {
        "cert": str(creds.cert_path),
        "key": str(creds.key_path),
        "ca": str(creds.ca_path),
        "crl": str(crl),
    }


@pytest.fixture(scope="module")
def sim(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHome]:
    def dev(dev_id: str, kind: str, template: str, **extra: Any) -> dict[str, Any]:
        d = {"id": dev_id, "kind": kind, "modbus": {"port": 0, "unit": 1, "template": template}}
        if dev_id in pki.files:
            d["tls"] = _tls(pki.files[dev_id], pki.crl)
        return {**d, **extra}

    home = {
        "name": "tls",
        "seed": 5,
        "devices": [
            dev("meter", "meter", "meter-3ph"),
            dev("battery", "battery", "home-battery", capacity_wh=10000),
            dev("ev", "ev_charger", "ev-charger"),
            dev("hp", "heat_pump", "heat-pump"),
            dev("pv", "pv", "pv-inverter", kwp=4.0),
            dev("pv-plain", "pv", "pv-inverter", kwp=3.0),  # plain Modbus TCP, as before
        ],
    }
    with run_sim(home, tmp_path_factory.mktemp("sim"), speed=60.0, start=START) as running:
        yield running


def gateway_config(sim: SimHome, tmp: Path, creds: Path, tls: dict[str, Any]) -> GatewayConfig:
    devices = []
    for dev_id, ep in sim.endpoints["devices"].items():
        assert ep["tls"] == (dev_id != "pv-plain")  # the simulator says which ports are TLS
        cfg = {
            "protocol": "modbus",
            "id": dev_id,
            "template": ep["template"],
            "host": ep["host"],
            "port": ep["port"],
            "unit": ep["unit"],
            "poll_s": 10,
            "timeout_s": 0.5,
        }
        if dev_id in tls:
            cfg["tls"] = tls[dev_id]
        devices.append(cfg)
    return GatewayConfig.model_validate(
        {
            "gateway_id": "box-1",
            "data_dir": str(tmp),
            "store": {"path": str(tmp / "store.db")},
            "credentials": str(creds),
            "devices": devices,
        }
    )


@pytest.fixture
async def gateway(sim: SimHome, pki: Pki, tmp_path: Path) -> AsyncIterator[Gateway]:
    tls = {
        "meter": {"server_name": "meter-1"},
        "battery": {"server_name": "meter-1"},  # the impostor claims this name too
        "ev": True,  # verifies the address dialled, 127.0.0.1, which ev-1's certificate lacks
        "hp": True,
        "pv": True,
    }
    cfg = gateway_config(sim, tmp_path, pki.gateway.dir, tls)
    c = sim.endpoints["clock"]
    gw = Gateway(cfg, ScaledClock(start=c["start"], speed=c["speed"], anchor=c["anchor"]))
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await until(lambda: len(gw.pollers) == len(cfg.devices) or task.done())
    yield gw
    stop.set()
    await task


def poller(gw: Gateway, dev_id: str) -> Poller:
    return next(p for p in gw.pollers if p.device.id == dev_id)


async def until(condition: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_gateway_reads_the_meter_over_mutual_tls(sim: SimHome, gateway: Gateway) -> None:
    await until(lambda: poller(gateway, "meter").health.state == "ok")
    meter = poller(gateway, "meter").device
    assert isinstance(meter, ModbusDevice)
    readings = {r.quantity: r for r in await meter.poll()}
    state = (await sim.control({"cmd": "state"}))["devices"]["meter"]
    assert readings[Quantity.IMPORT_WH].value == pytest.approx(state["import_wh"], abs=50)
    assert readings[Quantity.VOLTAGE_L1_V].value == pytest.approx(230, abs=10)
    # the plain device next to it is read as before
    await until(lambda: poller(gateway, "pv-plain").health.state == "ok")
    # the meter's readings reach the store
    await until(lambda: gateway.written > 0)
    await gateway.flush()
    assert gateway.store is not None
    assert "meter" in {r.device for r in gateway.store.latest()}


@pytest.mark.parametrize(
    ("dev_id", "kind", "reason"),
    [
        ("battery", "unknown-ca", "its certificate is not issued under our root"),
        ("ev", "wrong-name", "its certificate is not issued to '127.0.0.1'"),
        ("hp", "revoked", "its certificate is revoked"),
        ("pv", "wrong-role", "pv-1 is a service, not a device"),
    ],
)
async def test_gateway_refuses_devices_it_cannot_trust(
    sim: SimHome, gateway: Gateway, dev_id: str, kind: str, reason: str
) -> None:
    p = poller(gateway, dev_id)
    await until(lambda: p.health.state == "failing")
    port = sim.device(dev_id)["port"]
    assert p.health.last_error is not None
    # the first attempt's error, or a later poll's while the link backs off: both say why
    assert p.health.last_error.startswith(f"{dev_id} at 127.0.0.1:{port}: TLS (attempt 1")
    assert f"the gateway refused the device: {reason}" in p.health.last_error
    # no reading of a refused device was taken
    assert p.health.last_ok is None
    # one security event, naming the device, its address and why
    await until(lambda: any(e.kind == kind for e in read_events(gateway.cfg.security_log_path)))
    events = read_events(gateway.cfg.security_log_path)
    mine = [e for e in events if e.source == f"127.0.0.1:{port}"]
    assert [e.kind for e in mine] == [kind]
    assert mine[0].fields == {"protocol": "modbus-tls", "devices": [dev_id]}
    assert reason in mine[0].detail
    assert verify_chain(events) == []
    # a retry with the same refusal is not a second event
    polls = p.health.polls
    await p.poll_once()
    assert p.health.polls == polls + 1 and p.health.state == "failing"
    assert len([e for e in read_events(gateway.cfg.security_log_path) if e.kind == kind]) == 1


def link(sim: SimHome, dev_id: str, tls: ModbusTls | None) -> ModbusLink:
    ep = sim.device(dev_id)
    return ModbusLink(ep["host"], ep["port"], 0.5, tls=tls)


async def refused_by_device(sim: SimHome, tls: ModbusTls) -> str:
    tls.devices.append("meter")
    lk = link(sim, "meter", tls)
    try:
        with pytest.raises(DeviceError) as err:
            await lk.read(1, "input", 0, 2)
    finally:
        lk.close()
    return str(err.value)


async def test_device_refuses_a_gateway_without_client_certificate(
    sim: SimHome, pki: Pki, tmp_path: Path
) -> None:
    gw = pki.gateway
    security = SecurityLog(tmp_path / "security.log")
    tls = ModbusTls(lambda: client_context(ca=gw.ca_path, crl=gw.crl_path), "meter-1", security)
    message = await refused_by_device(sim, tls)
    port = sim.device("meter")["port"]
    assert message.startswith(f"meter at 127.0.0.1:{port}: TLS (unit 1, reading input 0+2): ")
    # asyncio's TLS server (the simulator's) closes without an alert, so the gateway can only say
    # what it saw; a device that sends one gets its reason shown ("certificate required")
    assert "the device closed the connection after the TLS handshake without answering" in message
    assert "does not accept the gateway's certificate" in message
    assert security.events() == []  # the device refused, not us


async def test_device_refuses_a_revoked_gateway(sim: SimHome, pki: Pki, tmp_path: Path) -> None:
    revoked = pki.revoked_gateway
    tls = ModbusTls(lambda: client_context(revoked), "meter-1")
    message = await refused_by_device(sim, tls)
    assert "does not accept the gateway's certificate" in message
    # while the valid box reads on, through the same kind of link
    good = ModbusTls(lambda: client_context(pki.gateway), "meter-1")
    lk = link(sim, "meter", good)
    try:
        assert len(await lk.read(1, "input", 0, 2)) == 2
    finally:
        lk.close()


async def test_plaintext_client_on_the_tls_port_gets_nothing(sim: SimHome, tmp_path: Path) -> None:
    ep = sim.device("meter")
    client = AsyncModbusTcpClient(ep["host"], port=ep["port"], timeout=0.5, retries=0)
    assert await client.connect()  # TCP gets through; the TLS server then drops the frames
    try:
        with pytest.raises(ModbusException):
            await client.read_input_registers(0, count=2, device_id=1)
    finally:
        client.close()
    lk = link(sim, "meter", None)  # a gateway configured without `tls:`
    try:
        with pytest.raises(DeviceError, match=rf"127.0.0.1:{ep['port']} unit 1: no answer"):
            await lk.read(1, "input", 0, 2)
    finally:
        lk.close()


async def test_tls_gateway_refuses_a_plaintext_device(
    sim: SimHome, pki: Pki, tmp_path: Path
) -> None:
    security = SecurityLog(tmp_path / "security.log")
    tls = ModbusTls(lambda: client_context(pki.gateway), "127.0.0.1", security)
    tls.devices.append("pv-plain")
    lk = link(sim, "pv-plain", tls)
    try:
        with pytest.raises(DeviceError) as err:
            await lk.read(1, "input", 0, 2)
    finally:
        lk.close()
    port = sim.device("pv-plain")["port"]
    assert str(err.value) == (
        f"pv-plain at 127.0.0.1:{port}: TLS (attempt 1): no TLS session within the timeout "
        "(does the device speak TLS on this port?)"
    )
    assert security.events() == []  # a silent peer may just be slow: no evidence of an attack


def test_config_needs_credentials_for_tls(tmp_path: Path) -> None:
    base = {
        "gateway_id": "box-1",
        "data_dir": str(tmp_path),
        "store": {"path": str(tmp_path / "s.db")},
    }
    meter = {"protocol": "modbus", "id": "meter", "template": "meter-3ph", "host": "meter-1"}
    with pytest.raises(
        ValidationError, match="devices meter use tls but there is no `credentials:`"
    ):
        GatewayConfig.model_validate({**base, "devices": [{**meter, "tls": True}]})
    cfg = GatewayConfig.model_validate(
        {**base, "credentials": str(tmp_path), "devices": [{**meter, "tls": True}]}
    )
    dev = cfg.devices[0]
    assert dev.protocol == "modbus" and dev.port == 802 and dev.tls is not None
    assert dev.tls.server_name is None
    assert cfg.security_log_path == tmp_path / "security.log"
    plain = GatewayConfig.model_validate({**base, "devices": [{**meter, "tls": False}]})
    assert plain.devices[0].protocol == "modbus" and plain.devices[0].port == 502
    with pytest.raises(ValidationError, match="share meter-1:802 but not its `tls:` settings"):
        GatewayConfig.model_validate(
            {
                **base,
                "credentials": str(tmp_path),
                "devices": [
                    {**meter, "tls": True},
                    {**meter, "id": "pv", "port": 802, "template": "pv-inverter", "unit": 2},
                ],
            }
        )


def test_home_file_tls_paths_and_errors(pki: Pki, tmp_path: Path) -> None:
    meter = pki.files["meter"]
    (tmp_path / "certs").mkdir()
    for name in ("cert.pem", "key.pem", "ca.pem"):
        shutil.copy(meter.dir / name, tmp_path / "certs" / name)
    tls = "{cert: certs/cert.pem, key: certs/key.pem, ca: certs/ca.pem}"
    home = tmp_path / "home.yaml"
    home.write_text(
        "name: t\ndevices:\n"
        f"  - {{id: meter, kind: meter, modbus: {{port: 1502, template: meter-3ph}}, tls: {tls}}}\n"
        "  - {id: pv, kind: pv, kwp: 3, modbus: {port: 1502, unit: 2, template: pv-inverter}}\n"
    )
    with pytest.raises(HomeFileError, match="port 1502: devices sharing a port share its `tls:`"):
        load_home(home)
    home.write_text(home.read_text().replace("port: 1502, unit: 2", "port: 0"))
    spec = load_home(home).devices[0].tls
    assert spec is not None and spec.cert == tmp_path / "certs" / "cert.pem"  # next to the file
    server_context(spec, "meter")  # loads: the device's chain, key and our root
    (tmp_path / "certs" / "ca.pem").write_text("not a certificate")
    with pytest.raises(HomeFileError, match=r"devices meter: tls: ca: cannot use .*ca.pem"):
        server_context(spec, "meter")
    (tmp_path / "certs" / "key.pem").unlink()
    with pytest.raises(HomeFileError, match=r"devices meter: tls: key: .*key.pem does not exist"):
        server_context(spec, "meter")
