"""Clearing methods and payment rules by name, chosen per aggregator (STYLE.md: ASSUME's
registry). A method module registers itself on import; `methods()` imports them all."""

from __future__ import annotations

import importlib
from typing import Protocol

from homeflex.cloud.market.objects import Bid, ClearingResult

METHOD_MODULES = ("homeflex.cloud.market.lfm",)  # each registers its methods on import


class ClearingMethod(Protocol):
    """Clears one round of bids. `participants`, when given, restricts the round to them (VCG
    and Shapley re-clear without some participants)."""

    name: str

    def clear(self, bids: list[Bid], participants: set[str] | None = None) -> ClearingResult: ...


_METHODS: dict[str, ClearingMethod] = {}


def register(method: ClearingMethod) -> ClearingMethod:
    if method.name in _METHODS:
        raise ValueError(f"clearing method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def methods() -> dict[str, ClearingMethod]:
    for module in METHOD_MODULES:
        importlib.import_module(module)
    return dict(_METHODS)


def method(name: str) -> ClearingMethod:
    known = methods()
    if name not in known:
        raise KeyError(f"no clearing method {name!r}; choose one of {', '.join(sorted(known))}")
    return known[name]
