"""Capability drivers for Zigbee devices, driven by a template: a smart plug (Switchable) and a
smart appliance (DeferrableAppliance), on top of zigpy's Device objects.

Reports the device sends are cached and returned by the next poll; a quantity is read over the
radio only when its reporting was refused or its last report is older than twice its max interval.
"""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's int types and structs have unannotated constructors)

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import zigpy.application
import zigpy.exceptions
import zigpy.types as t
from zigpy.device import ZigbeeDevice
from zigpy.zcl import AttributeReportedEvent, Cluster, foundation
from zigpy.zcl.helpers import ReportingConfig

from homeflex.clock import Clock
from homeflex.edge.config import ZigbeeDeviceConfig
from homeflex.edge.devices.capabilities import CommandNotConfirmed, DeviceError, Quantity, Reading
from homeflex.edge.devices.zigbee.templates import Mapping, ZigbeeTemplate, cluster_class


class Radio(Protocol):
    """What a driver needs of the gateway: zigpy's application while the radio is up."""

    app: zigpy.application.ControllerApplication | None


log = logging.getLogger(__name__)

MAX_RELATIVE_MINUTES = 255 * 60 + 59


def decode_relative_time(value: int) -> float:
    """Seconds of a ZCL Appliance Control time in relative encoding (bits 0-5 minutes,
    6-7 encoding = 0, 8-15 hours)."""
    minutes, encoding, hours = value & 0x3F, (value >> 6) & 0x3, value >> 8
    if encoding != 0 or minutes > 59:
        raise ValueError(f"0x{value:04x} is not a relative ZCL time")
    return float((hours * 60 + minutes) * 60)


def encode_relative_minutes(minutes: int) -> int:
    return (minutes // 60) << 8 | (minutes % 60)


class ZigbeeDriver:
    """A configured Zigbee device: readings per its template, from reports or reads."""

    def __init__(
        self,
        cfg: ZigbeeDeviceConfig,
        template: ZigbeeTemplate,
        gateway: Radio,
        clock: Clock,
    ) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.template = template
        self.ieee = t.EUI64.convert(cfg.ieee)
        self.where = f"zigbee device {cfg.id} ({cfg.ieee})"
        self._gateway = gateway
        self._clock = clock
        self._lock = asyncio.Lock()
        self._zdev: ZigbeeDevice | None = None
        self._left = False
        self._configured = False
        # scaling as (multiplier × scale, divisor): dividing last keeps 2312 / 10 = 231.2 exact
        self._scale: dict[Quantity, tuple[float, float]] = {}
        self._reporting: set[Quantity] = set()  # reporting accepted by the device
        # latest value of each (cluster, attribute) from reports and reads, with its gateway time
        self._latest: dict[tuple[int, int], tuple[Any, float]] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # --- events from the gateway -------------------------------------------------------------

    def joined(self) -> None:
        """The device was interviewed or was heard again: (re)configure at the next poll."""
        if self._left:
            log.info("%s is back in the network", self.where)
        self._left = False
        self._configured = False

    def schedule_setup(self) -> None:
        """Bind and configure reporting now, not at the next poll (the device just joined)."""
        task = asyncio.get_running_loop().create_task(
            self._prepare(), name=f"zigbee-setup-{self.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare(self) -> None:
        async with self._lock:
            try:
                dev = self._device()
                if not self._configured:
                    await self._setup(dev)
            except DeviceError as exc:
                log.warning(
                    "%s: setup after joining failed, retried at the next poll: %s", self.where, exc
                )

    def left(self) -> None:
        log.warning("%s left the network", self.where)
        self._left = True
        self._latest.clear()

    def heard(self) -> None:
        """A frame came from the device: if it had left, it is back (and must be set up again)."""
        if self._left:
            self.joined()
            self.schedule_setup()

    # --- the zigpy device ----------------------------------------------------------------------

    def _device(self) -> ZigbeeDevice:
        app = self._gateway.app
        if app is None:
            raise DeviceError(f"{self.where}: the zigbee radio is not connected")
        dev = app.devices.get(self.ieee)
        if dev is None:
            raise DeviceError(f"{self.where}: has not joined the network; open permit join")
        if self._left:
            raise DeviceError(f"{self.where}: has left the network")
        if not isinstance(dev, ZigbeeDevice) or not dev.is_initialized:
            raise DeviceError(f"{self.where}: joined, but zigpy's interview is not complete")
        if dev is not self._zdev:
            self._adopt(dev)
        return dev

    def _adopt(self, dev: ZigbeeDevice) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._zdev, self._configured = dev, False
        self._latest.clear()
        for name in {m.cluster for m in self.template.quantities}:
            cluster = self._cluster(dev, name)
            self._unsubscribe.append(
                cluster.on_event(AttributeReportedEvent.event_type, self._on_report)
            )

    def _on_report(self, event: AttributeReportedEvent) -> None:
        self._latest[(event.cluster_id, event.attribute_id)] = (event.value, self._clock.now())

    def _cluster(self, dev: ZigbeeDevice, name: str) -> Cluster:
        cls = cluster_class(name)
        endpoint = dev.endpoints.get(self.template.endpoint)
        clusters: dict[int, Cluster] = getattr(endpoint, "in_clusters", {})
        cluster = clusters.get(cls.cluster_id)
        if cluster is None:
            raise DeviceError(
                f"{self.where}: endpoint {self.template.endpoint} has no cluster "
                f"{name} (0x{cls.cluster_id:04x}); is template "
                f"{self.template.name} the right one?"
            )
        return cluster

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn zigpy's failures into DeviceErrors that name the device and the request."""
        try:
            yield
        except TimeoutError:
            raise DeviceError(
                f"{self.where}: no answer to {what} within {self.cfg.timeout_s:g} s (3 attempts)"
            ) from None
        except zigpy.exceptions.DeliveryError as exc:
            raise DeviceError(f"{self.where}: {what} not delivered: {exc}") from None
        except zigpy.exceptions.ZigbeeException as exc:
            raise DeviceError(f"{self.where}: {what} failed: {type(exc).__name__} {exc}") from None

    async def _read(self, cluster: Cluster, attributes: list[str]) -> dict[str, Any]:
        what = (
            f"Read Attributes {attributes} of cluster {cluster.ep_attribute} "
            f"(0x{cluster.cluster_id:04x})"
        )
        with self._talking(what):
            names: list[int | str | foundation.ZCLAttributeDef] = [*attributes]
            success, failure = await cluster.read_attributes(names, timeout=self.cfg.timeout_s)
        if failure:
            problems = ", ".join(
                f"{name}: {getattr(status, 'name', status)}" for name, status in failure.items()
            )
            raise DeviceError(
                f"{self.where}: cluster {cluster.ep_attribute} "
                f"(0x{cluster.cluster_id:04x}) refused {problems}"
            )
        now = self._clock.now()
        for name, value in success.items():
            self._latest[(cluster.cluster_id, cluster.find_attribute(name).id)] = (value, now)
        return dict(success)

    # --- setup: scaling and reporting --------------------------------------------------------

    async def _setup(self, dev: ZigbeeDevice) -> None:
        """Read the scaling attributes once, then bind and configure reporting where asked for."""
        scales: dict[Quantity, tuple[float, float]] = {}
        for m in self.template.quantities:
            mult = div = 1.0
            if m.multiplier or m.divisor:
                names = [n for n in (m.multiplier, m.divisor) if n]
                values = await self._read(self._cluster(dev, m.cluster), names)
                mult = float(values.get(m.multiplier, 1)) if m.multiplier else 1.0
                div = float(values.get(m.divisor, 1)) if m.divisor else 1.0
                if div == 0 or mult == 0:
                    raise DeviceError(
                        f"{self.where}: cluster {m.cluster} has multiplier {mult:g} "
                        f"and divisor {div:g}; cannot scale {m.quantity}"
                    )
            scales[m.quantity] = (mult * m.scale, div)
        self._scale = scales
        self._reporting = await self._configure_reporting(dev)
        self._configured = True
        polled = [q.value for q in self._polled()]
        log.info(
            "%s: reporting %s; polled %s",
            self.where,
            sorted(q.value for q in self._reporting) or "nothing",
            polled or "nothing",
        )

    def _polled(self) -> list[Quantity]:
        return [m.quantity for m in self.template.quantities if m.quantity not in self._reporting]

    async def _configure_reporting(self, dev: ZigbeeDevice) -> set[Quantity]:
        by_cluster: dict[str, list[Mapping]] = {}
        for m in self.template.quantities:
            if m.report is not None:
                by_cluster.setdefault(m.cluster, []).append(m)
        accepted: set[Quantity] = set()
        for name, mappings in by_cluster.items():
            cluster = self._cluster(dev, name)
            with self._talking(f"Bind of cluster {name}"):
                status, *_ = await cluster.bind()
            if status != 0:
                log.warning(
                    "%s refused to bind cluster %s (%s); polling it instead",
                    self.where,
                    name,
                    getattr(status, "name", status),
                )
                continue
            config = {}
            for m in mappings:
                assert m.report is not None and m.attribute is not None
                attr_def = cluster.find_attribute(m.attribute)
                num, den = self._scale[m.quantity]
                change = 1 if m.decode != "number" else m.report.change * den / num
                config[attr_def] = ReportingConfig(
                    min_interval=m.report.min_s,
                    max_interval=m.report.max_s,
                    reportable_change=max(1, round(change)) if change > 0 else 0,
                )
            with self._talking(f"Configure Reporting of cluster {name}"):
                result = await cluster.configure_reporting_multiple(config)
            for m in mappings:
                status = result.get(cluster.find_attribute(m.attribute or ""))
                if status == foundation.Status.SUCCESS:
                    accepted.add(m.quantity)
                else:
                    log.warning(
                        "%s: no reports of %s (%s); polling it instead",
                        self.where,
                        m.quantity.value,
                        getattr(status, "name", status),
                    )
        return accepted

    # --- poll ----------------------------------------------------------------------------------

    async def poll(self) -> list[Reading]:
        async with self._lock:
            dev = self._device()
            if not self._configured:
                await self._setup(dev)
            now = self._clock.now()
            values: dict[Quantity, tuple[Any, float]] = {}
            to_read: dict[str, list[Mapping]] = {}
            for m in self.template.quantities:
                cached = self._fresh_report(dev, m, now)
                if cached is not None:
                    values[m.quantity] = cached
                elif m.attribute is not None:
                    to_read.setdefault(m.cluster, []).append(m)
                else:
                    values[m.quantity] = (await self._command_field(dev, m), now)
            for name, mappings in to_read.items():
                got = await self._read(
                    self._cluster(dev, name), [m.attribute or "" for m in mappings]
                )
                for m in mappings:
                    values[m.quantity] = (got[m.attribute or ""], now)
            return [self._reading(m, *values[m.quantity]) for m in self.template.quantities]

    def _fresh_report(self, dev: ZigbeeDevice, m: Mapping, now: float) -> tuple[Any, float] | None:
        if m.quantity not in self._reporting or m.report is None or m.attribute is None:
            return None
        cluster = self._cluster(dev, m.cluster)
        key = (cluster.cluster_id, cluster.find_attribute(m.attribute).id)
        cached = self._latest.get(key)
        if cached is None or now - cached[1] > 2 * m.report.max_s:
            return None
        return cached

    async def _command_field(self, dev: ZigbeeDevice, m: Mapping) -> Any:
        cluster = self._cluster(dev, m.cluster)
        with self._talking(f"command {m.command} of cluster {m.cluster}"):
            rsp = await getattr(cluster, m.command or "")(timeout=self.cfg.timeout_s)
        if isinstance(rsp, foundation.DefaultResponse) or not hasattr(rsp, m.field or ""):
            raise DeviceError(
                f"{self.where}: {m.command} of cluster {m.cluster} gave no {m.field}: {rsp!r}"
            )
        return getattr(rsp, m.field or "")

    def _reading(self, m: Mapping, raw: Any, ts: float) -> Reading:
        try:
            if m.decode == "relative_time":
                value = decode_relative_time(int(raw))
            else:
                num, den = self._scale.get(m.quantity, (m.scale, 1.0))
                value = float(raw) * num / den
        except (TypeError, ValueError) as exc:
            raise DeviceError(
                f"{self.where}: {m.cluster}.{m.attribute or m.field} = {raw!r} "
                f"is not a usable {m.quantity.value}: {exc}"
            ) from None
        return Reading(self.id, m.quantity, ts, value)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()


class ZigbeePlug(ZigbeeDriver):
    """A smart plug: Device + Switchable."""

    async def switch(self, on: bool) -> None:
        ref = self.template.switch
        assert ref is not None  # the template validator demands it
        async with self._lock:
            cluster = self._cluster(self._device(), ref.cluster)
            command = "on" if on else "off"
            with self._talking(f"{command} command"):
                rsp = await getattr(cluster, command)(timeout=self.cfg.timeout_s)
            status = getattr(rsp, "status", None)
            if status != foundation.Status.SUCCESS:
                raise DeviceError(f"{self.where}: refused {command}: {rsp!r}")
            state = (await self._read(cluster, [ref.attribute]))[ref.attribute]
            if bool(state) != on:
                raise CommandNotConfirmed(
                    f"{self.where}: switched {command} but {ref.attribute} reads back {bool(state)}"
                )


class ZigbeeAppliance(ZigbeeDriver):
    """A smart appliance: Device + DeferrableAppliance. The start is moved with Appliance Control's
    Write Functions (StartTime, relative, whole minutes) and confirmed by reading StartTime back."""

    async def defer_start(self, delay_s: int) -> None:
        ref = self.template.defer
        assert ref is not None  # the template validator demands it
        minutes = round(delay_s / 60)
        if not 0 <= minutes <= MAX_RELATIVE_MINUTES:
            raise DeviceError(
                f"{self.where}: a start delay of {delay_s} s is outside "
                f"0..{MAX_RELATIVE_MINUTES * 60} s"
            )
        async with self._lock:
            cluster = self._cluster(self._device(), ref.cluster)
            attr_def = cluster.find_attribute(ref.attribute)
            function = foundation.Attribute(
                attrid=attr_def.id,
                value=foundation.TypeValue(
                    type=attr_def.zcl_type, value=attr_def.type(encode_relative_minutes(minutes))
                ),
            )
            with self._talking("Write Functions (start time)"):
                rsp = await cluster.write_functions(
                    functions=[function], timeout=self.cfg.timeout_s
                )
            status = getattr(rsp, "status", None)
            if status != foundation.Status.SUCCESS:
                raise DeviceError(
                    f"{self.where}: refused a start in {minutes} min "
                    f"({getattr(status, 'name', status)}): no programme prepared, or it would "
                    "miss the programme's finish time"
                )
            raw = (await self._read(cluster, [ref.attribute]))[ref.attribute]
            back = decode_relative_time(int(raw)) / 60
            # the countdown may have ticked one minute between the write and the read
            if back not in (minutes, minutes - 1):
                raise CommandNotConfirmed(
                    f"{self.where}: start set to {minutes} min but "
                    f"{ref.attribute} reads back {back:g} min"
                )
