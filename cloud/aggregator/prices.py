"""The prices an aggregator sends its homes for a day, from a price file in the gateway's format
(edge/home.py `PriceFile`: start, series_step_s, import_price, export_price), so one file
can serve the aggregator and, for a test or a demo, a gateway alike.

The file is read at start-up, where a bad one stops the platform with the file, line and
field; afterwards it is read again whenever it changes (size or time stamp), so the next day's
prices can be dropped in while the platform runs. A change that cannot be used is logged and
the last good prices stay. PTUs the file does not cover get the flat prices.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import Field

from homeflex.agents.messages import Price
from homeflex.clock import PTU_SECONDS
from homeflex.cloud.aggregator.brain import DayPrices
from homeflex.configfile import ConfigError, parse_config
from homeflex.edge.home import PriceFile
from homeflex.edge.planner.forecast import resample

PTUS = 96
log = logging.getLogger(__name__)


class AggregatorPriceFile(PriceFile):
    """The gateway's price file, with every price bounded as the prices message bounds it
    (€/kWh within ±10: a price per MWh is refused here, not by each home)."""

    import_price: list[Price] = Field(min_length=1)
    export_price: list[Price] = Field(min_length=1)


def read_price_file(path: Path) -> AggregatorPriceFile:
    """The file's prices, or ConfigError naming the file, and the line and field at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such price file; check `prices: file:`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: the price file cannot be read ({exc})") from None
    return parse_config(text, AggregatorPriceFile, str(path))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class FilePrices:
    """`prices(day)` for the aggregator's brain: the day's 96 PTU prices from the file,
    resampled to 15 minutes, the flat prices where the file has none."""

    def __init__(self, path: Path, flat_import: float, flat_export: float) -> None:
        self.path = path
        self.flat_import = flat_import
        self.flat_export = flat_export
        self._stamp = _stamp(path)
        self.series = read_price_file(path)  # a bad file stops the start

    def _reload(self) -> None:
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.series = read_price_file(self.path)
        except ConfigError as exc:
            log.error("prices: %s; keeping the prices read before", exc)
            return
        log.info("prices: %s read again, %d values", self.path, len(self.series.import_price))

    def __call__(self, day: date) -> DayPrices:
        self._reload()
        s = self.series
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()  # UTC days
        first = round((day_start - s.start.timestamp()) / PTU_SECONDS)
        file_imp = resample(s.import_price, s.series_step_s)
        file_exp = resample(s.export_price, s.series_step_s)
        imp, exp = [self.flat_import] * PTUS, [self.flat_export] * PTUS
        for t in range(PTUS):
            if 0 <= first + t < len(file_imp):
                imp[t], exp[t] = file_imp[first + t], file_exp[first + t]
        return DayPrices(imp, exp)
