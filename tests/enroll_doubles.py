"""TEST DOUBLES of the XMPP account store for the enrollment tests: one in memory, one that
records its calls to a file (the enrollment service runs in its own process; the test reads
what it was asked to add), and a launcher that runs the `homeflex` command with the recording
one registered. Not account stores: the real one is the XMPP server's, wired into
homeflex.cloud.enroll.accounts.ACCOUNT_STORES separately.

Run: python -m tests.enroll_doubles cloud enroll ... --xmpp-accounts test-double=FILE"""

from __future__ import annotations

import json
from pathlib import Path


class InMemoryAccountsDouble:
    """TEST DOUBLE: accounts in a dict."""

    def __init__(self) -> None:
        self.accounts: dict[str, str] = {}

    def add(self, jid: str, password: str) -> None:
        if jid in self.accounts:
            raise ValueError(f"account {jid} exists")
        self.accounts[jid] = password

    def remove(self, jid: str) -> bool:
        return self.accounts.pop(jid, None) is not None


class AccountsRecordingDouble:
    """Appends every call as a JSON line: {"op": "add"|"remove", "jid", "password"?}."""

    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError("test-double needs a file: test-double=FILE")
        self.path = Path(path)

    def calls(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def accounts(self) -> dict[str, str]:
        """jid -> password, replaying the calls."""
        current: dict[str, str] = {}
        for call in self.calls():
            if call["op"] == "add":
                current[call["jid"]] = call["password"]
            else:
                current.pop(call["jid"], None)
        return current

    def _append(self, call: dict[str, str]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(call) + "\n")

    def add(self, jid: str, password: str) -> None:
        if jid in self.accounts():
            raise ValueError(f"account {jid} exists")
        self._append({"op": "add", "jid": jid, "password": password})

    def remove(self, jid: str) -> bool:
        existed = jid in self.accounts()
        self._append({"op": "remove", "jid": jid})
        return existed


def register() -> None:
    from homeflex.cloud.enroll.accounts import ACCOUNT_STORES

    ACCOUNT_STORES["test-double"] = AccountsRecordingDouble


if __name__ == "__main__":
    from homeflex.cli import main

    register()
    main()
