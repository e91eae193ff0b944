"""Clearing methods and payment rules by name, chosen per aggregator (STYLE.md: ASSUME's
registry). A method module registers itself on import; `methods()` imports them all."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from homeflex.cloud.market.objects import Bid, ClearingResult

if TYPE_CHECKING:
    from homeflex.cloud.market.mies import CoordinationResult, Instance

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


# Coordination methods (seed 001) run a whole multi-carrier system, every agent's model and
# horizon, rather than one round of bids: they have their own entry point and a registry beside
# the clearing methods', sharing one namespace of names.
COORDINATION_MODULES = ("homeflex.cloud.market.coordination",)


class OptionError(ValueError):
    """A setting the coordination method does not take."""


class CoordinationMethod(Protocol):
    name: str

    def run(self, instance: Instance, **options: Any) -> CoordinationResult:
        """OptionError for a setting the method does not take, before running."""
        ...


_COORDINATION: dict[str, CoordinationMethod] = {}


def register_coordination(method: CoordinationMethod) -> CoordinationMethod:
    if method.name in _COORDINATION or method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    _COORDINATION[method.name] = method
    return method


def coordination_methods() -> dict[str, CoordinationMethod]:
    for module in COORDINATION_MODULES:
        importlib.import_module(module)
    return dict(_COORDINATION)


def coordination_method(name: str) -> CoordinationMethod:
    known = coordination_methods()
    if name not in known:
        raise KeyError(f"no coordination method {name!r}; choose one of {', '.join(sorted(known))}")
    return known[name]
