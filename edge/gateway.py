"""The gateway daemon: drivers poll devices, readings flow in batches into the store.

One asyncio process. The store lives on a single worker thread (SQLite commits with fsync must not
stall the event loop); everything else is a task on the loop. Nothing here stops because one
device, the radio or a value misbehaves. With a `home:` section the control loop plans the home
from the same readings and drives its devices; the planner solves on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from homeflex.clock import Clock, ptu_start
from homeflex.edge.config import GatewayConfig, ModbusDeviceConfig, ZigbeeDeviceConfig
from homeflex.edge.control import Command, ControlLoop
from homeflex.edge.devices.capabilities import Device, Quantity, Reading
from homeflex.edge.devices.modbus import ModbusDevice, ModbusLink
from homeflex.edge.devices.modbus_tls import ClientContexts, ModbusTls
from homeflex.edge.devices.templates import load_modbus_template
from homeflex.edge.home import Home, HomeConfig, send
from homeflex.edge.planner.inputs import PlanInputs
from homeflex.edge.planner.kpi import report
from homeflex.edge.planner.planner import Plan, plan_to_json, solve
from homeflex.edge.poller import Poller
from homeflex.edge.preferences import PreferenceError, PreferenceFile, Preferences, apply
from homeflex.edge.store import Store
from homeflex.edge.uplink import Uplink
from homeflex.security import SecurityLog

if TYPE_CHECKING:
    from homeflex.edge.home_agent import HomeAgent

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_MAX = 5000
FLUSH_EVERY_S = 0.5  # real seconds between store commits while readings arrive
STATUS_EVERY_S = 2.0
STALE_POLLS = 3  # a device's reading counts for the planner until this many polls are missed
RETENTION_EVERY_S = 3600.0  # gateway-clock seconds
STOP_TIMEOUT_S = 10.0  # real seconds the tasks, then the devices and the store, get to stop
RETENTION_CHUNK = 20_000
# While the store cannot be written (disk full, SD card failing) readings wait in memory up to this
# many; then the oldest go. Counters are cumulative, so the energy they carried is not lost.
PENDING_MAX = 200_000
ADDED_DEVICES = "devices-added.json"  # Modbus devices the owner added on the web page


class ZigbeeRadio(Protocol):
    async def start(self) -> None: ...
    def device(self, cfg: ZigbeeDeviceConfig) -> Device: ...
    async def close(self) -> None: ...


class Gateway:
    def __init__(
        self,
        cfg: GatewayConfig,
        clock: Clock | None = None,
        planner: Callable[[PlanInputs], Plan] = solve,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or cfg.clock.build()
        self.pollers: list[Poller] = []
        self.links: dict[tuple[str, int], ModbusLink] = {}
        self.zigbee: ZigbeeRadio | None = None
        self._pending: list[Reading] = []
        self._wake = asyncio.Event()
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store: Store | None = None
        self.written = 0
        # the owner's choices (edge/preferences.py) over gateway.yaml's values
        self.preference_file = PreferenceFile(cfg.data_dir)
        self.preferences = self.preference_file.load()
        self.home = Home(self._home_config(self.preferences)) if cfg.home is not None else None
        self.control: ControlLoop | None = None
        self._planner = planner
        self._for_control: list[Reading] = []
        self._history_ptu: float | None = None
        self._plan_written: Plan | None = None
        self.security: SecurityLog | None = None  # opened by start()
        self.uplink: Uplink | None = None  # started by run() when telemetry is configured
        self.agent: HomeAgent | None = None  # started by run() when `agent:` is configured
        self.web_url: str | None = None  # set by run() once the web page listens
        self._tasks: list[asyncio.Task[Any]] = []  # run()'s, stopped when it ends
        # one context source for every TLS link: it follows the credentials on disk
        self._tls_contexts = ClientContexts(cfg.credentials) if cfg.credentials else None

    def _home_config(self, prefs: Preferences) -> HomeConfig:
        assert self.cfg.home is not None
        try:
            return apply(self.cfg.home, prefs)
        except PreferenceError as exc:  # gateway.yaml changed under them: the installer's hold
            self.preference_file.error = f"{exc}; the installer's settings are used"
            log.error("preferences: %s", self.preference_file.error)
            return self.cfg.home

    def set_preferences(self, prefs: Preferences, why: str) -> int:
        """Keep the owner's new choices and plan again with them; PreferenceError (nothing
        changed) when the planner cannot take them. Returns the number of the last solve
        started before the change: a plan from a later one has them (ControlLoop.plan_solve)."""
        home_cfg = apply(self.cfg.home, prefs) if self.cfg.home is not None else None
        self.preference_file.save(prefs)
        self.preferences = prefs
        if home_cfg is None or self.home is None or self.control is None:
            return 0
        self.home.cfg = home_cfg
        before = self.control.solves
        self.control.replan(why)
        return before

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    async def start(self) -> None:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await self._db(Store.open, self.cfg.store.path)
        if self.cfg.telemetry is not None:
            await self._db(self.store.enable_outbox)
        self.security = SecurityLog(self.cfg.security_log_path)
        if self.cfg.zigbee is not None:
            from homeflex.edge.devices.zigbee import (
                ZigbeeGateway,  # only boxes with a radio need zigpy
            )

            self.zigbee = ZigbeeGateway(self.cfg.zigbee, self.cfg.data_dir, self.clock)
        for dev_cfg in [*self.cfg.devices, *self._added()]:
            device = self._build(dev_cfg)
            self.pollers.append(Poller(device, dev_cfg.poll_s, self.clock, self._accept))
        if self.home is not None:
            self.home.prices.reload()
            self.control = ControlLoop(
                self.clock,
                self.home.cfg.meter,
                self.home.make_inputs,
                self._planner,
                # readings are taken in once a cycle: fresh for a few cycles at least
                reading_max_age_s=max(60.0, STALE_POLLS * self.home.cfg.cycle_s),
                device_max_age_s={d.id: STALE_POLLS * d.poll_s for d in self.cfg.devices},
            )
        if self.zigbee is not None:
            await self.zigbee.start()  # after the drivers exist: it pairs the ones not yet joined
        log.info(
            "gateway %s: %d devices, store %s",
            self.cfg.gateway_id,
            len(self.pollers),
            self.cfg.store.path,
        )

    def _build(self, dev_cfg: ModbusDeviceConfig | ZigbeeDeviceConfig) -> Device:
        if isinstance(dev_cfg, ModbusDeviceConfig):
            template = load_modbus_template(dev_cfg.template)
            key = (dev_cfg.host, dev_cfg.port)
            link = self.links.get(key)
            if link is None:
                tls = None
                if dev_cfg.tls is not None:
                    assert self._tls_contexts is not None  # the config demands credentials
                    name = dev_cfg.tls.server_name or dev_cfg.host
                    tls = ModbusTls(self._tls_contexts, name, self.security)
                link = self.links[key] = ModbusLink(
                    dev_cfg.host, dev_cfg.port, dev_cfg.timeout_s, dev_cfg.pause_s, tls
                )
            if link.tls is not None:
                link.tls.devices.append(dev_cfg.id)
            link.pause_s = max(link.pause_s, dev_cfg.pause_s)
            return ModbusDevice(dev_cfg, template, link, self.clock)
        assert self.zigbee is not None  # the config validator demands a radio for zigbee devices
        return self.zigbee.device(dev_cfg)

    def _added(self) -> list[ModbusDeviceConfig]:
        """The Modbus devices the owner added on the web page (`devices-added.json`); one that
        does not fit (an id taken by gateway.yaml since) is reported and left out."""
        path = self.cfg.data_dir / ADDED_DEVICES
        try:
            rows = json.loads(path.read_text()) if path.exists() else []
            added = [ModbusDeviceConfig.model_validate(row) for row in rows]
        except (OSError, ValueError) as exc:
            log.error("%s: cannot be used (%s); the devices added on the web page are not read",
                      path, exc)  # fmt: skip
            return []
        taken = {d.id for d in self.cfg.devices}
        for d in added:
            if d.id in taken:
                log.error("%s: device id %r is also in the configuration; left out", path, d.id)
        return [d for d in added if d.id not in taken]

    def add_modbus(self, dev_cfg: ModbusDeviceConfig) -> None:
        """A device added on the web page (its connection tested there): kept in
        `devices-added.json` and polled from now on. ValueError when its id is taken."""
        if any(p.device.id == dev_cfg.id for p in self.pollers):
            raise ValueError(f"there is already a device called {dev_cfg.id!r}")
        path = self.cfg.data_dir / ADDED_DEVICES
        rows = [d.model_dump(mode="json") for d in self._added()] + [
            dev_cfg.model_dump(mode="json")
        ]
        _write_atomic(path, json.dumps(rows, indent=1))
        poller = Poller(self._build(dev_cfg), dev_cfg.poll_s, self.clock, self._accept)
        self.pollers.append(poller)
        self._tasks.append(asyncio.create_task(poller.run(), name=f"poll-{dev_cfg.id}"))
        log.info("device %s added (%s at %s:%d)", dev_cfg.id, dev_cfg.template, dev_cfg.host,
                 dev_cfg.port)  # fmt: skip

    def _accept(self, readings: list[Reading]) -> None:
        self._pending.extend(readings)
        if self.control is not None:
            self._for_control.extend(readings)
        if len(self._pending) >= BATCH_MAX:
            self._wake.set()

    async def _writer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY_S)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Commit what has been read; on a store error keep the readings and try again later."""
        if not self._pending or self.store is None:
            return
        batch, self._pending = self._pending, []
        try:
            self.written += await self._db(self.store.write, batch)
        except Exception:
            log.exception(
                "store: could not write %d readings; keeping them for the next attempt", len(batch)
            )
            self._pending = batch + self._pending
            if len(self._pending) > PENDING_MAX:
                dropped = len(self._pending) - PENDING_MAX
                del self._pending[:dropped]
                log.error("store: %d oldest unwritten readings dropped to bound memory", dropped)

    async def _control_poll(self) -> list[Reading]:
        """The control loop's input: the readings taken since its last cycle (the pollers' own,
        no second poll). New prices and, once per PTU, the history are taken in first, and the
        PTU's prices recorded."""
        assert self.home is not None and self.control is not None
        readings, self._for_control = self._for_control, []
        if self.home.prices.reload():
            self.control.replan("new prices")
        now = self.clock.now()
        if self.store is not None and self._history_ptu != ptu_start(now):
            try:
                self.home.history = await self._db(self.home.load_history, self.store, now)
                # the PTU's prices as they are now: what its energy costs (the History page)
                (imp,), (exp,) = self.home.prices.horizon(ptu_start(now), 1)
                await self._db(self.store.record_prices, ptu_start(now), imp, exp)
                self._history_ptu = ptu_start(now)
            except Exception:  # plan on the history we have; try again next cycle
                log.exception("control: could not read the history from the store")
        return readings

    async def _control_send(self, commands: list[Command]) -> None:
        await send(commands, {p.device.id: p.device for p in self.pollers})
        self.write_plan()

    def write_plan(self) -> None:
        """plan.json (with its KPIs against the baseline) next to status.json, each time the
        loop follows another plan (the planner's, or the fallback's when there is none)."""
        if self.control is None or self.control.current is None:
            return
        plan, inputs = self.control.current
        if plan is self._plan_written:
            return
        _write_atomic(self.cfg.data_dir / "plan.json", plan_to_json(plan, report(inputs, plan)))
        self._plan_written = plan

    def plan_status(self) -> dict[str, Any] | None:
        """What status.json says about the plan: the one the loop follows now and why."""
        if self.control is None or self.home is None:
            return None
        plan = self.control.current[0] if self.control.current is not None else None
        return {
            "status": plan.status if plan is not None else "none",
            "start": plan.start if plan is not None else None,
            "cost_eur": plan.energy_cost_eur if plan is not None else None,
            "replans": [{"at": at, "reason": why} for at, why in list(self.control.replans)[-5:]],
            "last_error": self.control.last_error,
            "price_error": self.home.prices.error,
        }

    async def _status_writer(self) -> None:
        while True:
            try:
                self.write_status()
            except Exception:  # a full disk, say: the status is written again next time
                log.exception("status: could not be written")
            await asyncio.sleep(STATUS_EVERY_S)

    def write_status(self) -> None:
        """status.json: device health for `homeflex edge status` (written atomically)."""
        status = {
            "gateway_id": self.cfg.gateway_id,
            "time": self.clock.now(),
            "pid": os.getpid(),
            "devices": [asdict(p.health) for p in self.pollers],
        }
        plan = self.plan_status()
        if plan is not None:
            status["plan"] = plan
        if self.uplink is not None:
            status["telemetry"] = asdict(self.uplink.stats)
        if self.agent is not None:
            status["agent"] = self.agent.status()
        if self.web_url is not None:
            status["web"] = {"url": self.web_url}
        _write_atomic(self.cfg.data_dir / "status.json", json.dumps(status, indent=1))

    async def _credential_upkeep(self) -> None:
        """Fetch the revocation list every `credentials_refresh_s` and renew the certificate
        once it is due (two thirds of its life), in real time: certificates do not follow a
        simulated clock. A failure (aggregator unreachable) is logged and tried again next
        time; the list in hand stays valid for two days, the certificate for weeks."""
        url, creds = self.cfg.enrollment_url, self.cfg.credentials
        if url is None or creds is None:
            return
        from homeflex.edge.enroll import refresh_crl, renew

        while True:
            try:
                await asyncio.to_thread(refresh_crl, url, creds)
                renewed = await asyncio.to_thread(renew, url, creds)
                if renewed is not None:
                    log.info("certificate renewed; valid until %s", renewed.isoformat())
            except Exception as exc:  # network, a refusal: keep what we have, try again
                log.warning("credentials upkeep with %s failed: %s", url, exc)
            await asyncio.sleep(self.cfg.credentials_refresh_s)

    async def _forward_events(self) -> None:
        url, creds = self.cfg.events_url, self.cfg.credentials
        if url is None or creds is None or self.security is None:
            return
        from homeflex.edge.event_forwarder import forward_events

        state = self.cfg.data_dir / "security-forwarded.json"
        await forward_events(self.security, url, creds, state, self.cfg.events_every_s)

    async def _uplink(self) -> None:
        """Telemetry to the cloud (edge/uplink.py), when configured."""
        tel, creds = self.cfg.telemetry, self.cfg.credentials
        if tel is None or creds is None or self.store is None:
            return
        poll_s = {d.id: d.poll_s for d in self.cfg.devices}
        self.uplink = Uplink(
            tel,
            creds,
            self.store,
            self._db,
            self.clock,
            poll_s,
            self.security,
            consent=lambda: self.preferences.neighbourhood.share_telemetry,
        )
        await self.uplink.run()

    async def _home_agent(self) -> None:
        """The home's agent in its aggregator's negotiations (edge/home_agent.py), when
        configured; it needs the control loop, whose plans it speaks for."""
        cfg = self.cfg
        if cfg.agent is None or cfg.credentials is None or self.home is None:
            return
        assert self.control is not None and self.security is not None
        from homeflex.edge.home_agent import HomeAgent  # only boxes in a neighbourhood need SPADE

        try:
            self.agent = HomeAgent(
                cfg.agent,
                cfg.credentials,
                cfg.data_dir,
                self.home,
                self.control,
                self.clock,
                self.security,
                lambda: self.preferences.neighbourhood,
            )
        except (OSError, ValueError) as exc:  # a missing certificate or password file
            log.error("agent: cannot start (%s); the home runs on its own plans", exc)
            return
        await self.agent.run()

    async def _web(self) -> None:
        """The homeowner's web page (edge/web), when configured."""
        web, creds = self.cfg.web, self.cfg.credentials
        if web is None or creds is None or self.security is None:
            return
        from homeflex.edge.web.accounts import Accounts
        from homeflex.edge.web.box import GatewayBox
        from homeflex.edge.web.server import bind, serve, write_setup_code

        accounts = Accounts(self.cfg.data_dir / "web.db", self.security)
        try:
            write_setup_code(accounts, self.cfg.data_dir)
            sock = bind(web.listen, web.port)
        except OSError as exc:  # the port in use: the home runs on without its page
            log.error("%s", exc)
            accounts.close()
            return
        host, port = sock.getsockname()[:2]
        self.web_url = f"https://{host}:{port}/"
        log.info("web page on %s", self.web_url)
        try:
            # mypy checks this file as edge.gateway, the box expects homeflex.edge.gateway
            box = GatewayBox(self)  # type: ignore[arg-type]
            await serve(box, accounts, self.security, sock, creds / "cert.pem", creds / "key.pem")
        finally:
            accounts.close()

    def live(self) -> dict[str, Any]:
        """Power now per flow, W (+ taken from the grid or used, - produced or given back),
        from the latest readings the control loop holds: the grid (the meter), each planned
        device by its kind, and the rest of the house (the meter less those)."""
        flows: dict[str, float | None] = {"grid": None}
        read_at = None
        if self.control is not None and self.home is not None:
            snap = self.control.snapshot()
            meter = snap.get((self.home.cfg.meter, Quantity.POWER_W))
            if meter is not None:
                flows["grid"], read_at = meter.value, meter.ts
            known = 0.0
            for d in self.home.cfg.devices:
                r = snap.get((d.id, Quantity.POWER_W))
                if r is None:  # not read lately: left out, not guessed
                    continue
                name = d.id if d.kind == "appliance" else d.kind
                flows[name] = (flows.get(name) or 0.0) + r.value
                known += r.value
            if meter is not None:
                flows["house"] = meter.value - known
        return {"flows": flows, "read_at": read_at}

    async def _retention(self) -> None:
        while True:
            await self.clock.sleep(RETENTION_EVERY_S)
            if self.store is not None:
                removed = await self._db(
                    self.store.apply_retention,
                    self.clock.now(),
                    self.cfg.store.retention,
                    RETENTION_CHUNK,
                )
                if removed:
                    log.info("retention: downsampled or removed %d rows", removed)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        tasks = self._tasks
        tasks += [asyncio.create_task(p.run(), name=f"poll-{p.device.id}") for p in self.pollers]
        tasks += [
            asyncio.create_task(self._writer(), name="writer"),
            asyncio.create_task(self._status_writer(), name="status"),
            asyncio.create_task(self._retention(), name="retention"),
            asyncio.create_task(self._credential_upkeep(), name="credentials"),
            asyncio.create_task(self._forward_events(), name="security-events"),
            asyncio.create_task(self._uplink(), name="uplink"),
            asyncio.create_task(self._home_agent(), name="home-agent"),
            asyncio.create_task(self._web(), name="web"),
        ]
        if self.control is not None and self.home is not None:
            run = self.control.run(self._control_poll, self._control_send, self.home.cfg.cycle_s)
            tasks.append(asyncio.create_task(run, name="control"))
        try:
            await stop.wait()
        finally:
            log.info("gateway %s stopping", self.cfg.gateway_id)
            for t in tasks:
                t.cancel()
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for t in pending:  # stopping must never hang the daemon: say what did not stop
                where = io.StringIO()
                t.print_stack(file=where)
                log.error("task %s did not stop; left behind\n%s", t.get_name(), where.getvalue())
            try:
                await asyncio.wait_for(self.close(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("closing devices and store took over %.0f s; gave up", STOP_TIMEOUT_S)
            log.info("gateway %s stopped; %d readings stored", self.cfg.gateway_id, self.written)

    async def close(self) -> None:
        if self.control is not None:
            self.control.close()
        await self.flush()
        self.write_status()
        for p in self.pollers:
            with contextlib.suppress(Exception):
                await p.device.close()
        for link in self.links.values():
            link.close()
        if self.zigbee is not None:
            await self.zigbee.close()
        if self.store is not None:
            await self._db(self.store.close)
        self._db_thread.shutdown(wait=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / "status.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data
