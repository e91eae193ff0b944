"""Prosody as the XMPP server: the configuration from packaging/prosody/homeflex.cfg.lua filled
in for one domain and our service certificate, the server run in the foreground (`prosody -F`)
with its data in a directory of ours, accounts made with `prosodyctl adduser` (the password on
standard input, never on a command line) by `ProsodyAccounts`, which finds the domain and data
directory in a small JSON file written next to the configuration (`homeflex-xmpp.json`; parsing
Lua for them would be guesswork).

Removing an account while Prosody runs goes through its admin shell (`prosodyctl shell user
delete JID`, mod_admin_shell over a Unix socket in the data directory): the running server
deletes the user and fires `user-deleted`, on which mod_c2s closes the account's open sessions
at once (stream error not-authorized, "Account deleted"). `prosodyctl deluser` would only delete
the file; a revoked box's session would stay open until it disconnected.

Prosody does the TLS, the refusal of clients without it (`c2s_require_encryption`) and the
password check itself; `ProsodyServer.record_refusals` turns what it logged about refused
clients into security events.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from homeflex.cloud.xmpp.domain import AccountError, check_password, local_part
from homeflex.pki.bundle import Credentials
from homeflex.security import SecurityLog

# the template ships in the source tree next to the other installation files
TEMPLATE = Path(__file__).resolve().parents[2] / "packaging" / "prosody" / "homeflex.cfg.lua"
PROSODY = "prosody"
PROSODYCTL = "prosodyctl"
SIDECAR = "homeflex-xmpp.json"  # next to the configuration: {"domain": ..., "data_dir": ...}

# the lines packaging/prosody/mod_homeflex_audit.lua writes for a refused client
_REFUSED = re.compile(r"homeflex-refused (?P<kind>[\w-]+) ip=(?P<ip>\S+) (?P<detail>.*)$")


class ProsodyError(RuntimeError):
    """Prosody did not start, or prosodyctl refused an account operation."""


def find_prosody() -> str | None:
    return shutil.which(PROSODY)


class ProsodyAccounts:
    """The accounts of the Prosody set up by `ProsodyServer.write_config(...)` at `config_path`,
    managed with prosodyctl (which needs no running server, except to end open sessions)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        sidecar = config_path.parent / SIDECAR
        try:
            info = json.loads(sidecar.read_text())
            self.domain = str(info["domain"])
            self.data_dir = Path(info["data_dir"])
        except FileNotFoundError:
            raise ProsodyError(
                f"{sidecar}: missing; it is written with the configuration by "
                "ProsodyServer.write_config"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ProsodyError(f"{sidecar}: not the expected JSON ({exc})") from None
        if not config_path.is_file():
            raise ProsodyError(f"{config_path}: no Prosody configuration there")

    def _ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROSODYCTL, "--config", str(self.config_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def exists(self, jid: str) -> bool:
        user = local_part(jid, self.domain)
        # internal storage: one file per account, named with URL-escaped parts
        return (
            self.data_dir / _escape(self.domain) / "accounts" / f"{_escape(user)}.dat"
        ).is_file()

    def add_account(self, jid: str, password: str, *, replace: bool = False) -> None:
        """Create account `jid` (`replace`: set a new password on an existing one)."""
        local_part(jid, self.domain)
        check_password(jid, password)
        if "\n" in password:
            raise AccountError(f"password for {jid}: must be one line")
        exists = self.exists(jid)
        if exists and not replace:
            raise AccountError(f"XMPP account {jid} exists already")
        # prosodyctl reads the password twice from standard input (no terminal needed)
        done = self._ctl("passwd" if exists else "adduser", jid, stdin=f"{password}\n{password}\n")
        if done.returncode != 0:
            raise ProsodyError(f"prosodyctl could not set up {jid}: {_last_line(done)}")

    def running(self) -> bool:
        """Whether a Prosody process with this configuration runs (its pid file names a live
        process and its admin socket is there)."""
        try:
            pid = int((self.data_dir / "prosody.pid").read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        except PermissionError:  # alive, another user's (prosody's own)
            pass
        return (self.data_dir / "prosody.sock").exists()

    def remove_account(self, jid: str) -> bool:
        """Delete account `jid`; whether it existed. With the server running, through its admin
        shell, so its open sessions end now (see module docstring)."""
        if not self.exists(jid):
            return False
        if self.running():
            done = self._ctl("shell", "user", "delete", jid)
        else:
            done = self._ctl("deluser", jid)
        if done.returncode != 0 or self.exists(jid):
            raise ProsodyError(f"prosodyctl could not remove {jid}: {_last_line(done)}")
        return True


@dataclass
class ProsodyServer:
    domain: str
    credentials: Credentials
    data_dir: Path
    port: int
    listen: str = "127.0.0.1"
    template: Path = TEMPLATE
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log_offset: int = field(default=0, init=False)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prosody.log"

    def write_config(self) -> Path:
        if not self.template.is_file():
            raise ProsodyError(f"{self.template}: the Prosody configuration template is missing")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        text = Template(self.template.read_text()).substitute(
            domain=self.domain,
            listen=self.listen,
            port=self.port,
            data_dir=self.data_dir,
            certificate=self.credentials.cert_path,
            key=self.credentials.key_path,
            # Prosody refuses root unless told; this sandbox and CI run everything as root
            run_as_root="true" if os.geteuid() == 0 else "false",
            module_dir=self.template.parent,
        )
        (self.data_dir / "certs").mkdir(exist_ok=True)
        self.config_path.write_text(text)
        sidecar = {"domain": self.domain, "data_dir": str(self.data_dir.resolve())}
        (self.config_path.parent / SIDECAR).write_text(json.dumps(sidecar) + "\n")
        return self.config_path

    def accounts(self) -> ProsodyAccounts:
        if not self.config_path.is_file():
            self.write_config()
        return ProsodyAccounts(self.config_path)

    def add_account(self, jid: str, password: str, *, replace: bool = False) -> None:
        """Create account `jid` (`replace`: set a new password on an existing one)."""
        self.accounts().add_account(jid, password, replace=replace)

    def remove_account(self, jid: str) -> bool:
        return self.accounts().remove_account(jid)

    def start(self, timeout: float = 15) -> None:
        """Run Prosody in the foreground as a child process; return when clients can connect."""
        self.write_config()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        out = (self.data_dir / "prosody.stdout").open("ab")
        self.proc = subprocess.Popen(
            [PROSODY, "-F", "--config", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + timeout
        want = f"Activated service 'c2s' on [{self.listen}]:{self.port}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProsodyError(
                    f"prosody exited with {self.proc.returncode}: {self._log_tail()}"
                )
            if want in self._log_since_start():
                return
            time.sleep(0.05)
        self.stop()
        raise ProsodyError(f"prosody did not start within {timeout} s: {self._log_tail()}")

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _log_since_start(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def _log_tail(self, lines: int = 5) -> str:
        text = self._log_since_start() or (self.data_dir / "prosody.stdout").read_text(
            errors="replace"
        )
        return " | ".join(text.strip().splitlines()[-lines:])

    def record_refusals(self, security: SecurityLog) -> int:
        """Security events for the refusals Prosody logged since the last call; how many."""
        text = self._log_since_start()
        count = 0
        for line in text.splitlines():
            m = _REFUSED.search(line.strip())
            if m:
                security.record(m["kind"], m["ip"], f"prosody: {m['detail'][:300]}")
                count += 1
        if self.log_path.exists():
            self._log_offset = self.log_path.stat().st_size
        return count


def _escape(part: str) -> str:
    # Prosody's datamanager escapes every character outside [a-zA-Z0-9_] as %XX
    return re.sub(r"[^a-zA-Z0-9_]", lambda m: f"%{ord(m.group()):02x}", part)


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[-1] if text else f"exit status {done.returncode}"
