"""The gateway's writer keeps readings it could not store, and bounds them."""

from pathlib import Path

import pytest

from homeflex.clock import ScaledClock
from homeflex.edge import gateway as gateway_module
from homeflex.edge.config import GatewayConfig
from homeflex.edge.devices.capabilities import Quantity, Reading
from homeflex.edge.gateway import Gateway


def config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {"gateway_id": "w", "data_dir": str(tmp_path), "store": {"path": str(tmp_path / "s.db")}}
    )


def meter(n: int, start: int = 0) -> list[Reading]:
    return [Reading("meter", Quantity.IMPORT_WH, 1000.0 + i, 10.0 * i) for i in range(start, n)]


async def test_failed_writes_are_kept_then_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gw = Gateway(config(tmp_path), ScaledClock(start=0, speed=1, anchor=0))
    await gw.start()
    assert gw.store is not None
    gw._accept(meter(5))
    await gw.flush()
    assert len(gw.store.readings("meter", Quantity.IMPORT_WH, 0, 1e9)) == 5

    broken = gw.store
    broken._db.conn.close()  # the disk goes away under the store
    monkeypatch.setattr(gateway_module, "PENDING_MAX", 8)
    gw._accept(meter(10, start=5))
    await gw.flush()
    assert [r.ts for r in gw._pending] == [1005.0 + i for i in range(5)]
    assert "could not write 5 readings; keeping them" in caplog.text
    gw._accept(meter(20, start=10))
    await gw.flush()
    # bounded: the newest 8 remain, the oldest went, and that was said
    assert [r.ts for r in gw._pending] == [1012.0 + i for i in range(8)]
    assert "7 oldest unwritten readings dropped" in caplog.text
    gw._db_thread.shutdown()
