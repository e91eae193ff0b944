"""Who may use the box's web page (seed 004 UC1, TST-SEC#03/#04): the first-boot claim with the
setup code, accounts with roles, argon2id password hashes, lockout after repeated failures, and
sessions. Every refusal is a security event (homeflex.security).

There is no default password. Until an owner exists, the page offers only the claim: whoever
shows the setup code printed on the box (and in the installer's report) chooses the owner's
name and password; the code is then spent. Wrong codes count like wrong passwords.

Lockout: `MAX_FAILURES` wrong passwords (or setup codes) in a row for one account, or from one
address, lock it for `LOCK_S`; a locked account is refused even with the right password, so
guessing gains nothing. A success clears the count. The address limit is higher (several people
share a home's address on the LAN).

Sessions: a random token in a cookie; the store keeps only its SHA-256, so a copy of the store
opens no session. A session ends after `IDLE_S` without use, `MAX_AGE_S` after login, or at
logout. Each session has its CSRF token, which every form and API call that changes something
must carry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from homeflex.security import SecurityLog

MAX_FAILURES = 5  # per account in a row
MAX_SOURCE_FAILURES = 20  # per address
LOCK_S = 15 * 60.0
IDLE_S = 30 * 60.0
MAX_AGE_S = 12 * 3600.0
MIN_PASSWORD = 10
MAX_PASSWORD = 128
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U to misread
CODE_LENGTH = 12
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
# the passwords tried first; a longer list would live in a file
COMMON = {"password123", "1234567890", "0123456789", "qwertyuiop", "homeflex123", "letmein123",
          "passwordpassword", "administrator", "1111111111", "abcdefghij"}  # fmt: skip

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS setup (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    code_hash TEXT NOT NULL,
    created REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    last REAL NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL,
    source TEXT NOT NULL
) STRICT;
"""


class Role(StrEnum):
    OWNER = "owner"  # everything, and the accounts
    INSTALLER = "installer"  # devices and their set-up
    READER = "reader"  # looks, changes nothing


class Refused(Exception):
    """A claim, login or account change refused; `str()` is what the person is told."""


@dataclass(frozen=True)
class Session:
    id: str  # the token's SHA-256: what the store and the security page show
    user: str
    role: Role
    csrf: str
    created: float
    seen: float
    source: str


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """One call at a time: the web server runs its routes on a pool of threads."""

    @functools.wraps(method)
    def run(self: Accounts, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class Accounts:
    def __init__(
        self,
        path: Path,
        security: SecurityLog,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> None:
        # one caller at a time, not always on the thread that opened it (the web server's pool)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        path.chmod(0o600)
        self.security = security
        self.clock = clock
        self.hasher = hasher or PasswordHasher()  # argon2id, 64 MiB, 3 passes

    def close(self) -> None:
        self._db.close()

    # --- first boot ----------------------------------------------------------------------------

    @_locked
    def needs_claim(self) -> bool:
        """No owner yet: the page offers only the claim."""
        row = self._db.execute("SELECT 1 FROM users WHERE role = ?", (Role.OWNER,)).fetchone()
        return row is None

    @_locked
    def new_setup_code(self) -> str | None:
        """The setup code, made once while the box is unclaimed; None when it exists already
        (it is shown once: the caller prints it on the installer's report) or the box is
        claimed. Grouped in fours: XXXX-XXXX-XXXX."""
        if not self.needs_claim() or self._db.execute("SELECT 1 FROM setup").fetchone():
            return None
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self._db.execute(
            "INSERT INTO setup VALUES (1, ?, ?)", (self.hasher.hash(code), self.clock())
        )
        return "-".join(code[i : i + 4] for i in range(0, CODE_LENGTH, 4))

    @_locked
    def claim(self, code: str, user: str, password: str, source: str) -> tuple[Session, str]:
        """The owner's account, for whoever shows the setup code; a session for them, and its
        token for the cookie."""
        if not self.needs_claim():
            self._refuse("web-claim", source, "the box is claimed already")
        row = self._db.execute("SELECT code_hash FROM setup").fetchone()
        if row is None:
            self._refuse("web-claim", source, "no setup code has been made for this box")
        self._check_locks("setup", source)
        typed = code.upper().replace("-", "").replace(" ", "")
        if not _verify(self.hasher, row[0], typed):
            self._failed("setup", source, "wrong setup code")
        self._check_new(user, password, forbidden=typed)
        self._clear("setup", source)
        self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                         (user, Role.OWNER, self.hasher.hash(password), self.clock()))  # fmt: skip
        self._db.execute("DELETE FROM setup")
        self.security.record("web-claimed", source, f"the box is claimed by owner {user!r}")
        return self._open(user, Role.OWNER, source)

    # --- accounts ------------------------------------------------------------------------------

    @_locked
    def add_user(self, by: Session, user: str, password: str, role: Role) -> None:
        if by.role != Role.OWNER:
            self._refuse("web-forbidden", by.source, f"{by.user} may not add accounts")
        if self._db.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone():
            raise Refused(f"there is an account {user!r} already")
        self._check_new(user, password)
        self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                         (user, role, self.hasher.hash(password), self.clock()))  # fmt: skip
        self.security.record("web-account", by.source, f"{by.user} added {role} {user!r}")

    @_locked
    def remove_user(self, by: Session, user: str) -> None:
        """The owner removes an installer's or reader's account, and its sessions with it."""
        row = self._db.execute("SELECT role FROM users WHERE name = ?", (user,)).fetchone()
        if by.role != Role.OWNER:
            self._refuse("web-forbidden", by.source, f"{by.user} may not remove accounts")
        if row is None:
            raise Refused(f"there is no account {user!r}")
        if Role(row[0]) == Role.OWNER:
            raise Refused("the owner's account stays (claim the box again to change owner)")
        self._db.execute("DELETE FROM sessions WHERE user = ?", (user,))
        self._db.execute("DELETE FROM users WHERE name = ?", (user,))
        self.security.record("web-account", by.source, f"{by.user} removed {row[0]} {user!r}")

    @_locked
    def end_session(self, by: Session, session_id: str) -> None:
        """The owner ends a session (a lost phone): its cookie no longer opens anything."""
        if by.role != Role.OWNER:
            self._refuse("web-forbidden", by.source, f"{by.user} may not end sessions")
        row = self._db.execute("SELECT user FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise Refused("that session has ended already")
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        self.security.record("web-session-ended", by.source,
                             f"{by.user} ended a session of {row[0]!r}")  # fmt: skip

    @_locked
    def users(self) -> list[tuple[str, Role]]:
        rows = self._db.execute("SELECT name, role FROM users ORDER BY name")
        return [(name, Role(role)) for name, role in rows]

    # --- login and sessions --------------------------------------------------------------------

    @_locked
    def login(self, user: str, password: str, source: str) -> tuple[Session, str]:
        """A session, and its token for the cookie."""
        self._check_locks(f"user:{user}", source)
        row = self._db.execute("SELECT role, hash FROM users WHERE name = ?", (user,)).fetchone()
        if row is None:
            # as slow as a real check, and the same words: nobody learns which names exist
            _verify(self.hasher, self._dummy(), password)
            self._failed(f"user:{user}", source, "wrong name or password")
        role, stored = row
        if not _verify(self.hasher, stored, password):
            self._failed(f"user:{user}", source, "wrong name or password")
        if self.hasher.check_needs_rehash(stored):
            self._db.execute("UPDATE users SET hash = ? WHERE name = ?",
                             (self.hasher.hash(password), user))  # fmt: skip
        self._clear(f"user:{user}", source)
        return self._open(user, Role(role), source)

    @_locked
    def session(self, token: str) -> Session | None:
        """The live session of a cookie's token (its last use now), or None."""
        sid = _sid(token)
        row = self._db.execute(
            "SELECT s.user, u.role, s.csrf, s.created, s.seen, s.source FROM sessions s"
            " JOIN users u ON u.name = s.user WHERE s.id = ?",
            (sid,),
        ).fetchone()
        if row is None:
            return None
        user, role, csrf, created, seen, source = row
        now = self.clock()
        if now - seen > IDLE_S or now - created > MAX_AGE_S:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            return None
        self._db.execute("UPDATE sessions SET seen = ? WHERE id = ?", (now, sid))
        return Session(sid, user, Role(role), csrf, created, now, source)

    @_locked
    def logout(self, session: Session) -> None:
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session.id,))

    @_locked
    def sessions(self) -> list[Session]:
        """The sessions still alive, newest use first (the security page)."""
        now = self.clock()
        rows = self._db.execute(
            "SELECT s.id, s.user, u.role, s.csrf, s.created, s.seen, s.source FROM sessions s"
            " JOIN users u ON u.name = s.user WHERE ? - s.seen <= ? AND ? - s.created <= ?"
            " ORDER BY s.seen DESC",
            (now, IDLE_S, now, MAX_AGE_S),
        )
        return [Session(i, u, Role(r), c, cr, se, so) for i, u, r, c, cr, se, so in rows]

    def _open(self, user: str, role: Role, source: str) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(_sid(token), user, role, secrets.token_urlsafe(32), now, now, source)
        self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                         (s.id, user, s.csrf, now, now, source))  # fmt: skip
        self._db.execute("DELETE FROM sessions WHERE ? - seen > ? OR ? - created > ?",
                         (now, IDLE_S, now, MAX_AGE_S))  # fmt: skip
        return s, token

    # --- failures and locks --------------------------------------------------------------------

    def _check_locks(self, key: str, source: str) -> None:
        for k, limit in ((key, MAX_FAILURES), (f"source:{source}", MAX_SOURCE_FAILURES)):
            row = self._db.execute(
                "SELECT count, last FROM failures WHERE key = ?", (k,)
            ).fetchone()
            if row is not None and row[0] >= limit and self.clock() - row[1] < LOCK_S:
                minutes = max(1, round((LOCK_S - (self.clock() - row[1])) / 60))
                public = f"too many failed attempts: locked, try again in {minutes} min"
                self._refuse("web-locked", source, f"{public} ({k})", public=public)

    def _failed(self, key: str, source: str, why: str) -> NoReturn:
        now = self.clock()
        for k in (key, f"source:{source}"):
            row = self._db.execute(
                "SELECT count, last FROM failures WHERE key = ?", (k,)
            ).fetchone()
            count = 1 if row is None or now - row[1] >= LOCK_S else row[0] + 1
            self._db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", (k, count, now))
        self._refuse("web-login-failed", source, f"{why} ({key})", public=why)

    def _clear(self, key: str, source: str) -> None:
        self._db.execute("DELETE FROM failures WHERE key IN (?, ?)", (key, f"source:{source}"))

    def _refuse(self, kind: str, source: str, detail: str, public: str | None = None) -> NoReturn:
        self.security.record(kind, source, detail)
        raise Refused(public or detail)

    def _check_new(self, user: str, password: str, forbidden: str = "") -> None:
        if not 1 <= len(user) <= 32 or not set(user) <= NAME_CHARS:
            raise Refused("name: 1 to 32 of a-z, 0-9, '.', '_', '-'")
        if len(password) < MIN_PASSWORD:
            raise Refused(f"password: at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise Refused(f"password: at most {MAX_PASSWORD} characters")
        lowered = password.lower()
        if lowered in COMMON or user in lowered or (forbidden and forbidden.lower() in lowered):
            raise Refused("password: too easy to guess (a common one, or your name or the code)")

    def _dummy(self) -> str:
        if not hasattr(self, "_dummy_hash"):
            self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        return self._dummy_hash


def _sid(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _verify(hasher: PasswordHasher, stored: str, given: str) -> bool:
    try:
        return hasher.verify(stored, given)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode(), b.encode())
