"""Who may send what to whom: one table of (sender role, message type, recipient role), plus the
one relation roles alone cannot express: a home talks only to its own aggregator, and an
aggregator only to its own homes.

The table is the whole policy; the message types are the USEF cycle's (prices, flexibility
request/offer/order, prognoses, metered sums, settlement), forecasts, acknowledgements and
security events.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from homeflex.pki.identity import Identity, Role

H, A, D, F, S = Role.HOME, Role.AGGREGATOR, Role.DSO, Role.FORECASTER, Role.SERVICE

# (sender role, message type, recipient role). Everything not listed is denied.
_DIRECT: frozenset[tuple[Role, str, Role]] = frozenset(
    {
        (A, "prices", H),
        (D, "flex-request", A),
        (A, "flex-offer", D),
        (H, "flex-offer", A),
        (A, "flex-order", H),
        (D, "flex-order", A),
        (H, "p-plan", A),
        (A, "d-prognosis", D),
        (H, "forecast-request", F),
        (A, "forecast-request", F),
        (F, "forecast", H),
        (F, "forecast", A),
        (A, "settlement", H),
        (D, "settlement", A),
        (A, "metered", D),  # the sum of its homes' meters, for the DSO's settlement
        # every party reports refusals it saw to the security service
        *((role, "security-event", S) for role in Role),
    }
)

# an acknowledgement may travel either way between two roles that talk at all (it answers a
# message, so it goes back against the direction of the message it acknowledges)
_TALK = {(s, r) for s, t, r in _DIRECT if t != "security-event"}
ALLOWED: frozenset[tuple[Role, str, Role]] = _DIRECT | frozenset(
    {(s, "ack", r) for s, r in _TALK} | {(r, "ack", s) for s, r in _TALK}
)

MESSAGE_TYPES: frozenset[str] = frozenset(t for _, t, _ in ALLOWED)


class Denied(Exception):
    """A message is not allowed; the text says which rule refused it."""


def role_allows(sender: Role, type: str, recipient: Role) -> bool:
    """Whether the table lets `sender`'s role send `type` to `recipient`'s role."""
    return (sender, type, recipient) in ALLOWED


@dataclass(frozen=True)
class Permissions:
    """The policy as one party applies it, to what it receives and what it sends.

    On a home: `aggregator` is the name of its aggregator (from its configuration), the only
    aggregator it accepts messages from or sends to. On an aggregator: `homes` holds the names of
    its homes (a set from the fleet registry, or any container that looks them up).
    """

    me: Identity
    aggregator: str | None = None
    homes: Container[str] = field(default_factory=frozenset)

    def check(self, sender: Identity, recipient: Identity, type: str) -> None:
        """Raise Denied unless `sender` may send `type` to `recipient`; one side is `me`."""
        if self.me not in (sender, recipient):
            raise Denied(f"{sender.name} → {recipient.name}: neither side is {self.me.name}")
        if type not in MESSAGE_TYPES:
            raise Denied(f"unknown message type {type!r}")
        if not role_allows(sender.role, type, recipient.role):
            raise Denied(
                f"role {sender.role} may not send {type!r} to role {recipient.role} "
                f"({sender.name} → {recipient.name})"
            )
        other = recipient if sender == self.me else sender
        mine = self.me.role, other.role
        if mine == (Role.HOME, Role.AGGREGATOR) and other.name != self.aggregator:
            raise Denied(
                f"{other.name} is not the aggregator of home {self.me.name} "
                f"(that is {self.aggregator or 'nobody: none configured'})"
            )
        if mine == (Role.AGGREGATOR, Role.HOME) and other.name not in self.homes:
            raise Denied(f"home {other.name} is not one of aggregator {self.me.name}'s homes")
