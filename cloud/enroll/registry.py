"""The aggregator's register of its boxes (`boxes.db` in the fleet directory, beside the CA's
register of certificates): each box's name, its state, its outstanding enrollment code (hash and
expiry only), when it enrolled, its current certificate and XMPP address.

States: pending (a code was issued, the box has not used it), enrolled, revoked (lost or
stolen: no code, renewal or re-enrollment works until the operator deliberately replaces it).
The CLI and the enrollment service use the register at the same time; changes that must not
interleave (claim a code and issue, revoke) run in one write transaction (BEGIN IMMEDIATE)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from homeflex.cloud.enroll.codes import code_hash, new_code
from homeflex.pki.identity import Identity, Role

CODE_VALIDITY = timedelta(days=7)
FILENAME = "boxes.db"


class BoxState(StrEnum):
    PENDING = "pending"
    ENROLLED = "enrolled"
    REVOKED = "revoked"


class RegistryError(Exception):
    """The operator asked for something the register refuses; the message says why."""


class CodeRefused(Exception):
    """An enrollment code that does not enroll anything. `reason` is one of: unknown-code,
    used-code, superseded-code, expired-code, box-revoked, box-state."""

    def __init__(self, reason: str, detail: str, box: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.box = box


@dataclass(frozen=True)
class Box:
    name: str
    state: BoxState
    created_at: datetime
    enrolled_at: datetime | None
    revoked_at: datetime | None
    cert_serial: int | None
    xmpp: str | None
    xmpp_account: bool  # an XMPP account was created and not (yet) removed
    code_hash: str | None  # the outstanding code, if any
    code_expires: datetime | None


@dataclass(frozen=True)
class IssuedCode:
    box: str
    code: str  # shown once to the operator, never stored
    expires: datetime


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS boxes (
                name TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL,
                enrolled_at TEXT, revoked_at TEXT, cert_serial TEXT, xmpp TEXT,
                xmpp_account INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS codes (
                hash TEXT PRIMARY KEY, box TEXT NOT NULL REFERENCES boxes(name),
                created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
                used_at TEXT, superseded_at TEXT);
            CREATE INDEX IF NOT EXISTS codes_box ON codes(box);
            """
        )

    @classmethod
    def open(cls, fleet_dir: Path) -> Registry:
        if not fleet_dir.is_dir():
            raise RegistryError(f"{fleet_dir}: no such fleet directory")
        return cls(fleet_dir / FILENAME)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reading

    def get(self, name: str) -> Box | None:
        boxes = self._select("WHERE b.name = ?", (name,))
        return boxes[0] if boxes else None

    def boxes(self) -> list[Box]:
        return self._select("ORDER BY b.name", ())

    def _select(self, where: str, args: tuple[str, ...]) -> list[Box]:
        rows = self.db.execute(
            "SELECT b.name, b.state, b.created_at, b.enrolled_at, b.revoked_at, b.cert_serial,"
            " b.xmpp, b.xmpp_account, c.hash, c.expires_at FROM boxes b LEFT JOIN codes c"
            " ON c.box = b.name AND c.used_at IS NULL AND c.superseded_at IS NULL " + where,
            args,
        ).fetchall()
        return [
            Box(
                name,
                BoxState(state),
                datetime.fromisoformat(created),
                _dt(enrolled),
                _dt(revoked),
                int(serial, 16) if serial else None,
                xmpp,
                bool(account),
                chash,
                _dt(expires),
            )
            for name, state, created, enrolled, revoked, serial, xmpp, account, chash, expires in (
                rows
            )
        ]

    def _require(self, name: str) -> Box:
        box = self.get(name)
        if box is None:
            raise RegistryError(f"no box {name!r} in {self.path}")
        return box

    # -- codes

    def new_code(
        self,
        name: str,
        valid: timedelta = CODE_VALIDITY,
        *,
        replace: bool = False,
        now: datetime | None = None,
    ) -> IssuedCode:
        """Register box `name` (if new) and give it a fresh one-time code; any earlier code of
        the box stops working. An enrolled or revoked box gets one only with `replace` (its
        certificates are then revoked by the caller: see flows.prepare_reenrollment)."""
        Identity(name, Role.HOME)  # the name must be usable in a certificate; raises ValueError
        if valid <= timedelta(0):
            raise RegistryError(f"a code valid for {valid} would never work")
        now = now or datetime.now(UTC)
        code = new_code()
        with self.transaction():
            box = self.get(name)
            if box is None:
                self.db.execute(
                    "INSERT INTO boxes (name, state, created_at) VALUES (?, ?, ?)",
                    (name, BoxState.PENDING.value, _ts(now)),
                )
            elif box.state is not BoxState.PENDING:
                if not replace:
                    raise RegistryError(
                        f"box {name} is {box.state.value}; a new code for it is a "
                        "re-enrollment that revokes its certificates (ask for it with --replace)"
                    )
                self.db.execute(
                    "UPDATE boxes SET state = ?, cert_serial = NULL, revoked_at = NULL"
                    " WHERE name = ?",
                    (BoxState.PENDING.value, name),
                )
            self._supersede(name, now)
            self.db.execute(
                "INSERT INTO codes (hash, box, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (code_hash(code), name, _ts(now), _ts(now + valid)),
            )
        return IssuedCode(name, code, now + valid)

    def _supersede(self, name: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE codes SET superseded_at = ? WHERE box = ? AND used_at IS NULL"
            " AND superseded_at IS NULL",
            (_ts(now), name),
        )

    def claim(self, code: str, now: datetime | None = None) -> Box:
        """Use up `code` and return its (pending) box, or CodeRefused saying why not.
        MalformedCode when the text is not a code at all. Call inside `transaction()` together
        with issuing the certificate, so a failed issue leaves the code usable."""
        now = now or datetime.now(UTC)
        digest = code_hash(code)
        with self.transaction():
            row = self.db.execute(
                "SELECT box, expires_at, used_at, superseded_at FROM codes WHERE hash = ?",
                (digest,),
            ).fetchone()
            if row is None:
                raise CodeRefused("unknown-code", "no such enrollment code")
            name, expires, used, superseded = row
            if used:
                raise CodeRefused("used-code", f"the code of box {name} was already used", name)
            box = self._require(name)
            if box.state is BoxState.REVOKED:
                raise CodeRefused("box-revoked", f"box {name} is revoked", name)
            if superseded:
                raise CodeRefused(
                    "superseded-code", f"box {name} was given a newer code since", name
                )
            if now > datetime.fromisoformat(expires):
                raise CodeRefused(
                    "expired-code", f"the code of box {name} expired {expires[:16]} UTC", name
                )
            if box.state is not BoxState.PENDING:
                raise CodeRefused("box-state", f"box {name} is {box.state.value}", name)
            self.db.execute("UPDATE codes SET used_at = ? WHERE hash = ?", (_ts(now), digest))
        return box

    # -- state changes

    def mark_enrolled(self, name: str, serial: int, xmpp: str, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.db.execute(
            "UPDATE boxes SET state = ?, enrolled_at = ?, cert_serial = ?, xmpp = ?,"
            " xmpp_account = 1 WHERE name = ?",
            (BoxState.ENROLLED.value, _ts(now), f"{serial:x}", xmpp, name),
        )

    def set_serial(self, name: str, serial: int) -> None:
        """A renewal's new certificate."""
        self.db.execute("UPDATE boxes SET cert_serial = ? WHERE name = ?", (f"{serial:x}", name))

    def set_xmpp_account(self, name: str, present: bool) -> None:
        self.db.execute("UPDATE boxes SET xmpp_account = ? WHERE name = ?", (int(present), name))

    def mark_revoked(self, name: str, now: datetime | None = None) -> Box:
        """The box is lost or stolen: its codes stop working, renewals are refused. Its
        certificates are revoked by the caller (flows.revoke_box), after this commits."""
        now = now or datetime.now(UTC)
        with self.transaction():
            box = self._require(name)
            if box.state is BoxState.REVOKED:
                return box  # revoking again finishes what an interrupted revocation left
            self._supersede(name, now)
            self.db.execute(
                "UPDATE boxes SET state = ?, revoked_at = ? WHERE name = ?",
                (BoxState.REVOKED.value, _ts(now), name),
            )
        return box
