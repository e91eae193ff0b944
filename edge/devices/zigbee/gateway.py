"""The gateway's Zigbee side: starts zigpy on the configured radio, keeps it connected, and hands
out a capability driver per configured device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import zigpy.application
import zigpy.config as conf
import zigpy.exceptions
from zigpy.device import BaseDevice

from homeflex.clock import Clock
from homeflex.edge.config import ZigbeeConfig, ZigbeeDeviceConfig
from homeflex.edge.devices.capabilities import DeviceError
from homeflex.edge.devices.zigbee.drivers import ZigbeeAppliance, ZigbeeDriver, ZigbeePlug
from homeflex.edge.devices.zigbee.templates import load_zigbee_template

log = logging.getLogger(__name__)

RETRY_S = 5.0  # real seconds between attempts to (re)start the radio
PAIRING_WINDOW_S = 254  # the longest permit join Zigbee allows in one request
# Whatever goes wrong while (re)starting the radio, the daemon must carry on without it.
RADIO_ERRORS = (
    OSError,
    TimeoutError,
    ValueError,
    zigpy.exceptions.ZigbeeException,
    zigpy.exceptions.RadioException,
)


def radio_class(name: str) -> type[zigpy.application.ControllerApplication]:
    """The zigpy ControllerApplication of the radio named in the config."""
    if name == "homeflex-sim":
        from homeflex.edge.devices.zigbee.radio import HomeflexSimApplication

        return HomeflexSimApplication
    if name == "znp":
        try:
            from zigpy_znp.zigbee.application import ControllerApplication
        except ImportError:
            raise DeviceError(
                "zigbee radio `znp` needs the zigpy-znp package: pip install zigpy-znp"
            ) from None
        from homeflex.edge.devices.zigbee.frames import MalformedFrameFilter

        class ZnpApplication(MalformedFrameFilter, ControllerApplication):  # type: ignore[misc]
            """zigpy-znp, unchanged, behind the same malformed-frame filter as every radio."""

        return ZnpApplication
    raise DeviceError(f"unknown zigbee radio {name!r}; use homeflex-sim or znp")


def _reason(exc: BaseException) -> str:
    """zigpy wraps the real cause (e.g. connection refused) in an exception without a message."""
    parts = [str(exc) or type(exc).__name__]
    if exc.__cause__ is not None:
        parts.append(str(exc.__cause__) or type(exc.__cause__).__name__)
    return ": ".join(parts)


class ZigbeeGateway:
    """One radio, zigpy's network state in `data_dir/zigbee.db`, and the drivers of its devices.

    If the radio cannot be reached, or is lost later, it is retried every RETRY_S seconds while the
    drivers report DeviceError; the daemon keeps running.
    """

    def __init__(self, config: ZigbeeConfig, data_dir: Path, clock: Clock) -> None:
        self.config = config
        self.data_dir = data_dir
        self.clock = clock
        self.app: zigpy.application.ControllerApplication | None = None
        self.drivers: dict[str, ZigbeeDriver] = {}
        self._radio = radio_class(config.radio)
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    def _zigpy_config(self) -> dict[str, Any]:
        return {
            conf.CONF_DEVICE: {conf.CONF_DEVICE_PATH: self.config.path},
            conf.CONF_DATABASE: str(self.data_dir / "zigbee.db"),
            conf.CONF_NWK: {
                conf.CONF_NWK_CHANNEL: self.config.channel,
                conf.CONF_NWK_CHANNELS: [self.config.channel],
            },
            conf.CONF_OTA: {conf.CONF_OTA_ENABLED: False},  # firmware updates are not our job
            conf.CONF_TOPO_SCAN_ENABLED: False,  # a home network needs no topology scans
        }

    async def start(self) -> None:
        """Start zigpy on the radio; if that fails, log it and keep trying in the background."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start_app()
        except RADIO_ERRORS as exc:
            log.error(
                "zigbee radio %s at %s: cannot start (%s); retrying every %g s",
                self.config.radio,
                self.config.path,
                _reason(exc),
                RETRY_S,
            )
            self._lost.set()
        self._keeper = asyncio.create_task(self._keep_connected(), name="zigbee-radio")

    async def _start_app(self) -> None:
        app = await self._radio.new(self._zigpy_config(), start_radio=False)
        try:
            await app.startup(auto_form=True)
        except BaseException:
            # zigpy leaves its database (and the thread behind it) open when the radio fails to
            # start; a box retrying every few seconds for days would pile up threads.
            with contextlib.suppress(Exception):
                await app.shutdown(db=True)
            raise
        app.add_listener(self)
        self.app = app
        self._lost.clear()
        log.info(
            "zigbee radio %s at %s: network on channel %s, %d devices known",
            self.config.radio,
            self.config.path,
            app.state.network_info.channel,
            len(app.devices) - 1,
        )
        for driver in self.drivers.values():
            driver.joined()
        await self._pair_missing()

    async def _pair_missing(self) -> None:
        """Open the network for a while only when configured devices have never joined: an
        always-open network would let any device in."""
        missing = self.missing()
        if missing:
            await self.permit_join(PAIRING_WINDOW_S)
            log.info(
                "zigbee: not yet paired: %s; network open for pairing for %d s",
                ", ".join(missing),
                PAIRING_WINDOW_S,
            )

    async def _keep_connected(self) -> None:
        while True:
            await self._lost.wait()
            if self.app is not None:
                app, self.app = self.app, None
                with contextlib.suppress(Exception):
                    await app.shutdown()
            try:
                await self._start_app()
            except RADIO_ERRORS as exc:
                log.warning("zigbee radio: still cannot start (%s)", _reason(exc))
                await asyncio.sleep(RETRY_S)

    async def permit_join(self, seconds: int) -> None:
        """Let new devices join for `seconds` (0 closes)."""
        if self.app is None:
            raise DeviceError("zigbee radio is not connected; cannot open permit join")
        if not 0 <= seconds <= 254:
            raise ValueError(f"permit join lasts 0..254 s, not {seconds}")
        await self.app.permit(seconds)

    def missing(self) -> list[str]:
        """Ids of configured devices the network does not know yet (never paired)."""
        known = {str(ieee) for ieee in self.app.devices} if self.app is not None else set()
        return [d.id for ieee, d in self.drivers.items() if ieee not in known]

    def device(self, cfg: ZigbeeDeviceConfig) -> ZigbeeDriver:
        template = load_zigbee_template(cfg.template)
        driver: ZigbeeDriver
        if template.capability == "switchable":
            driver = ZigbeePlug(cfg, template, self, self.clock)
        else:
            driver = ZigbeeAppliance(cfg, template, self, self.clock)
        self.drivers[str(driver.ieee)] = driver
        return driver

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for driver in self.drivers.values():
            await driver.close()
        if self.app is not None:
            app, self.app = self.app, None
            await app.shutdown()

    # --- zigpy application events (listener methods) ------------------------------------------

    def _driver(self, device: BaseDevice) -> ZigbeeDriver | None:
        return self.drivers.get(str(device.ieee))

    def device_initialized(self, device: BaseDevice) -> None:
        driver = self._driver(device)
        if driver is not None:
            driver.joined()
            driver.schedule_setup()

    def device_left(self, device: BaseDevice) -> None:
        driver = self._driver(device)
        if driver is not None:
            driver.left()

    device_removed = device_left

    def handle_message(self, device: BaseDevice, *_args: object) -> None:
        driver = self._driver(device)
        if driver is not None:
            driver.heard()

    def connection_lost(self, exc: Exception) -> None:
        log.error("zigbee radio: connection lost (%s); reconnecting", exc)
        self._lost.set()
