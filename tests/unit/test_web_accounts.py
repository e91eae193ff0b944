"""The box's accounts on their own clock: sessions end when idle or old, a lock ends after its
time, wrong setup codes lock the claim like wrong passwords, and the store holds neither a
session token nor the setup code nor a password in the clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from homeflex.edge.web.accounts import (
    IDLE_S,
    LOCK_S,
    MAX_AGE_S,
    MAX_FAILURES,
    Accounts,
    Refused,
    Role,
)
from homeflex.security import SecurityLog, read_events

FAST = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
PASSWORD = "a-long-enough-secret"


class Clock:
    def __init__(self) -> None:
        self.t = 1_768_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def box(tmp_path: Path) -> tuple[Accounts, Clock, str]:
    clock = Clock()
    accounts = Accounts(tmp_path / "web.db", SecurityLog(tmp_path / "s.log"), clock=clock,
                        hasher=FAST)  # fmt: skip
    code = accounts.new_setup_code()
    assert code is not None and accounts.new_setup_code() is None  # made once
    return accounts, clock, code


def test_a_session_ends_when_idle_or_old(box: tuple[Accounts, Clock, str]) -> None:
    accounts, clock, code = box
    _, token = accounts.claim(code, "anna", PASSWORD, "10.0.0.2")
    clock.t += IDLE_S - 1
    assert accounts.session(token) is not None  # used: the idle time starts again
    clock.t += IDLE_S - 1
    assert accounts.session(token) is not None
    clock.t += IDLE_S + 1
    assert accounts.session(token) is None and accounts.sessions() == []
    _, token = accounts.login("anna", PASSWORD, "10.0.0.2")
    for _ in range(int(MAX_AGE_S // (IDLE_S - 60)) + 1):  # busy all day: still ends
        clock.t += IDLE_S - 60
        last = accounts.session(token)
    assert last is None
    assert accounts.session("not-a-token") is None


def test_a_lock_ends_after_its_time(box: tuple[Accounts, Clock, str]) -> None:
    accounts, clock, code = box
    accounts.claim(code, "anna", PASSWORD, "10.0.0.2")
    for _ in range(MAX_FAILURES):
        with pytest.raises(Refused, match="wrong name or password"):
            accounts.login("anna", "wrong-wrong-wrong", "10.0.0.3")
    with pytest.raises(Refused, match="locked, try again in 15 min"):
        accounts.login("anna", PASSWORD, "10.0.0.3")
    clock.t += LOCK_S
    session, _ = accounts.login("anna", PASSWORD, "10.0.0.3")
    assert session.user == "anna" and session.role is Role.OWNER


def test_wrong_setup_codes_lock_the_claim(box: tuple[Accounts, Clock, str]) -> None:
    accounts, clock, code = box
    for n in range(MAX_FAILURES):
        with pytest.raises(Refused, match="wrong setup code"):
            accounts.claim(f"AAAA-AAAA-AAA{n}", "mallory", PASSWORD, "10.0.0.9")
    with pytest.raises(Refused, match="locked"):
        accounts.claim(code, "mallory", PASSWORD, "10.0.0.9")  # the right code, too late
    assert accounts.needs_claim()
    clock.t += LOCK_S
    accounts.claim(code, "anna", PASSWORD, "10.0.0.2")
    assert accounts.users() == [("anna", Role.OWNER)]


def test_the_store_keeps_no_secret_in_the_clear(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "web.db", SecurityLog(tmp_path / "s.log"), hasher=FAST)
    code = accounts.new_setup_code()
    assert code is not None
    stored = (tmp_path / "web.db").read_bytes()
    assert code.replace("-", "").encode() not in stored
    session, token = accounts.claim(code, "anna", PASSWORD, "10.0.0.2")
    accounts.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("web.db*"))
    assert token.encode() not in stored and PASSWORD.encode() not in stored
    assert session.id.encode() in stored  # its hash is how the store knows it
    assert (tmp_path / "web.db").stat().st_mode & 0o777 == 0o600


def test_a_reader_may_not_add_accounts_and_names_and_passwords_are_checked(
    box: tuple[Accounts, Clock, str], tmp_path: Path
) -> None:
    accounts, _, code = box
    owner, _ = accounts.claim(code, "anna", PASSWORD, "10.0.0.2")
    with pytest.raises(Refused, match="name: 1 to 32 of a-z"):
        accounts.add_user(owner, "Ben Smith", PASSWORD, Role.READER)
    with pytest.raises(Refused, match="too easy to guess"):
        accounts.add_user(owner, "ben", "ben-password-1", Role.READER)
    with pytest.raises(Refused, match="too easy to guess"):
        accounts.add_user(owner, "ben", "1234567890", Role.READER)
    accounts.add_user(owner, "ben", PASSWORD, Role.READER)
    reader, _ = accounts.login("ben", PASSWORD, "10.0.0.4")
    with pytest.raises(Refused, match="ben may not add accounts"):
        accounts.add_user(reader, "eve", PASSWORD, Role.OWNER)
    kinds = [e.kind for e in read_events(tmp_path / "s.log")]
    assert kinds == ["web-claimed", "web-account", "web-forbidden"]
