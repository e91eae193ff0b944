"""The energy bill: what the home pays for its import and earns for its export in each PTU. The
one formula that the planner minimises and that the baseline and the KPIs report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from homeflex.clock import PTU_SECONDS

KWH_PER_W_PTU = PTU_SECONDS / 3600.0 / 1000.0


@overload
def ptu_costs(
    import_price: Sequence[float],
    export_price: Sequence[float],
    import_w: Sequence[float],
    export_w: Sequence[float],
) -> list[float]: ...
@overload
def ptu_costs(
    import_price: Sequence[float],
    export_price: Sequence[float],
    import_w: Sequence[Any],
    export_w: Sequence[Any],
) -> list[Any]: ...
def ptu_costs(
    import_price: Sequence[float],
    export_price: Sequence[float],
    import_w: Sequence[Any],
    export_w: Sequence[Any],
) -> list[Any]:
    """€ per PTU: import bought at the import price minus export sold at the export price. Works
    on numbers and on the solver's linear expressions alike."""
    return [
        KWH_PER_W_PTU * (pi * i - pe * e)
        for pi, pe, i, e in zip(import_price, export_price, import_w, export_w, strict=True)
    ]
