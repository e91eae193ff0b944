"""The box's web page over real HTTPS (uvicorn on loopback with the box's certificate), from the
first boot to the security refusals of seed 004's TST-SEC#03/#04: the claim with the setup code,
no default credentials, lockout, cross-site posts, unauthenticated and wrong-role calls, path
traversal and oversized bodies refused, each refusal a security event."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from cryptography import x509

from homeflex.edge.config import ModbusDeviceConfig
from homeflex.edge.devices.capabilities import DeviceError
from homeflex.edge.preferences import Preferences
from homeflex.edge.web.accounts import MAX_FAILURES, Accounts, Role
from homeflex.edge.web.app import MAX_BODY
from homeflex.edge.web.box import DeviceRow, Neighbourhood
from homeflex.edge.web.history import Bucket, Period
from homeflex.edge.web.plan_view import PlanView
from homeflex.edge.web.server import bind, serve, write_setup_code
from homeflex.edge.web.suggestions import Suggestion
from homeflex.pki.identity import Identity
from homeflex.pki.identity import Role as PkiRole
from homeflex.security import SecurityLog, read_events
from tests.pki_fixtures import CredsFactory, creds, fleet_ca  # noqa: F401

FAST = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)  # tests only: quick hashes
LIVE = {"flows": {"grid": 1234.0, "pv": -2100.0, "battery": 500.0, "house": 2834.0},
        "read_at": 1_768_000_000.0}  # fmt: skip
OWNER, PASSWORD = "anna", "lentils-and-rice-42"
FORM = {"content-type": "application/x-www-form-urlencoded"}


class StillBox:
    """A box without a home or devices whose power stands still: what the security tests need."""

    gateway_id = "box-17"
    utc_offset_h = 0.0

    def __init__(self) -> None:
        self.prefs = Preferences()

    def now(self) -> float:
        return 1_768_000_000.0

    def live(self) -> dict[str, Any]:
        return LIVE

    def plan(self) -> PlanView | None:
        return None

    def plan_problem(self) -> str:
        return "this box plans no home: it only records its devices"

    async def wait_for_plan(self, after_solve: int) -> bool:
        return False

    async def history(self, period: Period, count: int) -> list[Bucket]:
        return []

    def devices(self) -> list[DeviceRow]:
        return []

    def templates(self) -> list[str]:
        return []

    async def permit_join(self, seconds: int) -> None:
        raise DeviceError("this box has no Zigbee radio")

    async def test_modbus(self, cfg: ModbusDeviceConfig) -> list[str]:
        return ["no devices here"]

    def add_modbus(self, cfg: ModbusDeviceConfig) -> None:
        raise ValueError("no devices here")

    def preferences(self) -> Preferences:
        return self.prefs

    def planned_devices(self) -> list[Any]:
        return []

    def set_preferences(self, prefs: Preferences, why: str) -> int:
        self.prefs = prefs
        return 0

    def neighbourhood(self) -> Neighbourhood:
        return Neighbourhood(False, False, "", 0, [], 0.0)

    async def suggestions(self) -> list[Suggestion]:
        return []


@dataclass
class Web:
    url: str
    data_dir: Path
    accounts: Accounts
    security: SecurityLog
    ctx: ssl.SSLContext
    code: str

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.ctx, follow_redirects=False, **kw)

    def events(self, kind: str) -> list[str]:
        return [e.detail for e in read_events(self.security.path) if e.kind == kind]


@pytest.fixture
async def web(tmp_path: Path, creds: CredsFactory) -> AsyncIterator[Web]:  # noqa: F811
    box = creds(Identity("box-17", PkiRole.HOME))
    security = SecurityLog(tmp_path / "security.log")
    accounts = Accounts(tmp_path / "web.db", security, hasher=FAST)
    path = write_setup_code(accounts, tmp_path)
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    code = path.read_text().strip()
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    task = asyncio.create_task(serve(StillBox(), accounts, security, sock,
                                     box.cert_path, box.key_path))  # fmt: skip
    # the client checks the chain to the fleet CA; the box is reached by address, so the name
    # is checked on the certificate's identity instead (test_the_page_is_served_with...)
    ctx = ssl.create_default_context(cafile=str(box.ca_path))
    ctx.check_hostname = False
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    yield Web(f"https://127.0.0.1:{port}", tmp_path, accounts, security, ctx, code)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    accounts.close()


def pre_token(page: httpx.Response) -> str:
    match = re.search(r'name="pre" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def claim(c: httpx.AsyncClient, code: str, password: str = PASSWORD) -> httpx.Response:
    form = await c.get("/claim")
    data = {"code": code, "user": OWNER, "password": password, "again": password,
            "pre": pre_token(form)}  # fmt: skip
    return await c.post("/claim", data=data)


async def login(c: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await c.get("/login")
    return await c.post("/login", data={"user": user, "password": password, "pre": pre_token(form)})


async def test_the_page_is_served_with_the_boxs_certificate_and_safe_headers(web: Web) -> None:
    host, port = web.url.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=web.ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    assert Identity.from_certificate(cert) == Identity("box-17", PkiRole.HOME)
    async with web.client() as c:
        first = await c.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/claim"
    assert first.headers["content-security-policy"].startswith("default-src 'self'")
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "server" not in first.headers


async def test_first_boot_claim_with_the_setup_code_then_log_in_and_out(web: Web) -> None:
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}",
                        web.code)  # fmt: skip
    async with web.client() as c:
        assert (await c.get("/login")).headers["location"] == "/claim"  # nothing to log in to
        wrong = await claim(c, "AAAA-BBBB-CCCC")
        assert wrong.status_code == 400 and "wrong setup code" in wrong.text
        weak = await claim(c, web.code, "short")
        assert weak.status_code == 400 and "at least 10 characters" in weak.text
        ok = await claim(c, web.code.lower().replace("-", " "))  # as a person might type it
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "hf_session=" in cookie
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        now = await c.get("/")
        assert now.status_code == 200 and "2834" in now.text and "anna" in now.text
        assert (await c.get("/api/now")).json() == LIVE
        # the code is spent: no second claim, and its file is gone at the next start
        assert (await c.get("/claim")).headers["location"] == "/login"
        pre = pre_token(await c.get("/login"))  # a form token of the box's own
        mallory = {"code": web.code, "user": "mallory", "password": "x" * 12,
                   "again": "x" * 12, "pre": pre}  # fmt: skip
        again = await c.post("/claim", data=mallory)
        assert again.status_code == 400 and "claimed already" in again.text
        assert write_setup_code(web.accounts, web.data_dir) is None
        assert not (web.data_dir / "setup-code.txt").exists()
        out = await c.post("/logout", data={"csrf": csrf_of(now)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert (await c.get("/api/now")).status_code == 401
    async with web.client() as c:
        assert (await login(c, OWNER, PASSWORD)).status_code == 303
        assert (await c.get("/api/session")).json()["role"] == "owner"
    assert web.events("web-claimed") == ["the box is claimed by owner 'anna'"]
    assert len(web.events("web-login-failed")) == 1  # the wrong code


async def test_no_default_credentials_work(web: Web) -> None:
    async with web.client() as c:
        await claim(c, web.code)
    defaults = [("admin", "admin"), ("admin", "password"), ("root", "root"), ("user", "user"),
                ("homeflex", "homeflex"), ("admin", "")]  # fmt: skip
    for user, password in defaults:
        async with web.client() as c:
            r = await login(c, user, password)
            assert r.status_code == 401 and "wrong name or password" in r.text
            assert "hf_session" not in r.headers.get("set-cookie", "")
    assert len(web.events("web-login-failed")) == len(defaults)


async def test_repeated_wrong_passwords_lock_the_account(web: Web) -> None:
    async with web.client() as c:
        await claim(c, web.code)
    async with web.client() as c:
        for _ in range(MAX_FAILURES):
            assert (await login(c, OWNER, "not-the-password")).status_code == 401
        locked = await login(c, OWNER, PASSWORD)  # the right one, too late
        assert locked.status_code == 401 and "locked, try again in 15 min" in locked.text
        assert "hf_session" not in locked.headers.get("set-cookie", "")
    assert len(web.events("web-login-failed")) == MAX_FAILURES
    assert web.events("web-locked") == [
        "too many failed attempts: locked, try again in 15 min (user:anna)"
    ]


async def test_a_cross_site_form_post_is_refused(web: Web) -> None:
    async with web.client() as c:
        await claim(c, web.code)
        page = await c.get("/")
        token = csrf_of(page)
        # another site's page posting to the box: the browser says where it comes from
        evil = await c.post("/logout", data={"csrf": token},
                            headers={"Origin": "https://evil.example"})  # fmt: skip
        assert evil.status_code == 403
        sneaky = await c.post("/logout", data={"csrf": token},
                              headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert sneaky.status_code == 403
        # and without the session's token (a forged form cannot read it)
        assert (await c.post("/logout", data={"csrf": "guess"})).status_code == 403
        assert (await c.post("/logout")).status_code == 403
        assert (await c.get("/api/now")).status_code == 200  # still signed in
    # a login form posted from elsewhere, without the form's own token
    async with web.client() as c:
        forged = await c.post("/login", data={"user": OWNER, "password": PASSWORD, "pre": "x"})
        assert forged.status_code == 403
    assert len(web.events("web-csrf")) == 5


async def test_unauthenticated_and_wrong_role_calls_are_refused(web: Web) -> None:
    async with web.client() as c:
        assert (await c.get("/api/now")).status_code == 401
        assert (await c.get("/api/session")).status_code == 401
        await claim(c, web.code)
        assert (await c.get("/security")).status_code == 200  # the owner's
    owner = web.accounts.sessions()[0]
    web.accounts.add_user(owner, "ben", "a-reader-password", Role.READER)
    async with web.client() as c:
        await login(c, "ben", "a-reader-password")
        assert (await c.get("/api/now")).status_code == 200  # a reader reads
        refused = await c.get("/security")
        assert refused.status_code == 403 and "ben is reader" in refused.text
        headers = {"X-CSRF-Token": (await c.get("/api/session")).json()["csrf"]}
        for path in ("/devices/permit-join", "/preferences", "/neighbourhood", "/accounts"):
            assert (await c.post(path, headers=headers)).status_code == 403, path
    # the installer: devices yes, the owner's choices and accounts no
    async with web.client() as c:
        await claimed_owner_adds(c, web, "carl", "an-installer-password", "installer")
    async with web.client() as c:
        await login(c, "carl", "an-installer-password")
        headers = {"X-CSRF-Token": (await c.get("/api/session")).json()["csrf"]}
        pairing = await c.post("/devices/permit-join", headers=headers, data={"seconds": "60"})
        assert pairing.status_code == 409  # allowed, and this box has no radio to open
        assert "pairing could not start: this box has no Zigbee radio" in pairing.text
        for path in ("/preferences", "/neighbourhood", "/accounts"):
            assert (await c.post(path, headers=headers)).status_code == 403, path
        refused = await c.post("/api/preferences", headers=headers, json={})
        assert refused.status_code == 403
    assert len(web.events("web-unauthenticated")) == 2
    assert web.events("web-forbidden") == [
        "GET /security: ben is reader, not owner",
        "POST /devices/permit-join: ben is reader, not installer",
        "POST /preferences: ben is reader, not owner",
        "POST /neighbourhood: ben is reader, not owner",
        "POST /accounts: ben is reader, not owner",
        "POST /preferences: carl is installer, not owner",
        "POST /neighbourhood: carl is installer, not owner",
        "POST /accounts: carl is installer, not owner",
        "POST /api/preferences: carl is installer, not owner",
    ]
    assert web.events("web-account")[-1] == "anna added installer 'carl'"


async def claimed_owner_adds(
    c: httpx.AsyncClient, web: Web, user: str, password: str, role: str
) -> None:
    """The owner (the box claimed already) adds an account on the Security page."""
    await login(c, OWNER, PASSWORD)
    page = await c.get("/security")
    bad = await c.post("/accounts", data={"user": user, "password": password, "role": "owner",
                                          "csrf": csrf_of(page)})  # fmt: skip
    assert bad.status_code == 400 and "role: &#39;owner&#39; is not installer or reader" in bad.text
    added = await c.post("/accounts", data={"user": user, "password": password, "role": role,
                                            "csrf": csrf_of(page)})  # fmt: skip
    assert added.status_code == 200 and f"{user} can log in now, as {role}." in added.text
    assert f"<li>{user} ({role})" in added.text


async def raw(web: Web, request: bytes) -> bytes:
    """Bytes on the wire, as sent: a client library would tidy the path."""
    host, port = web.url.removeprefix("https://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), ssl=web.ctx)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    return answer


async def test_path_traversal_and_oversized_bodies_are_refused(web: Web) -> None:
    for path in (b"/static/../web.db", b"/static/%2e%2e/web.db", b"/static/%252e%252e/web.db"):
        answer = await raw(web, b"GET " + path + b" HTTP/1.1\r\nHost: box\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert len(web.events("web-traversal")) == 3
    async with web.client() as c:
        big = await c.post("/login", content=b"x" * (MAX_BODY + 1), headers=FORM)
        assert big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(MAX_BODY // 1024 + 2):
                yield b"y" * 1024

        streamed = await c.post("/login", content=chunks(), headers=FORM)
        assert streamed.status_code == 413
    assert len(web.events("web-oversized")) == 2
    # the box still serves, and nothing leaked: the store is where it was
    async with web.client() as c:
        assert (await c.get("/claim")).status_code == 200
    assert (web.data_dir / "web.db").exists()


async def test_the_api_is_described(web: Web) -> None:
    async with web.client() as c:
        spec = (await c.get("/api/openapi.json")).json()
    assert {"/api/now", "/api/session"} <= set(spec["paths"])
    assert not any(p in spec["paths"] for p in ("/login", "/claim", "/logout"))


async def test_the_owner_ends_a_session_and_removes_an_account(web: Web) -> None:
    async with web.client() as owner:
        await claim(owner, web.code)
    async with web.client() as c:
        await claimed_owner_adds(c, web, "ben", "a-reader-password", "reader")
    async with web.client() as ben, web.client() as owner:
        await login(ben, "ben", "a-reader-password")
        assert (await ben.get("/api/now")).status_code == 200
        await login(owner, OWNER, PASSWORD)
        page = await owner.get("/security")
        (ben_session,) = [x for x in web.accounts.sessions() if x.user == "ben"]
        assert f'name="session" value="{ben_session.id}"' in page.text
        ended = await owner.post("/sessions/end", data={"session": ben_session.id,
                                                        "csrf": csrf_of(page)})  # fmt: skip
        assert ended.status_code == 200 and "The session is ended." in ended.text
        assert (await ben.get("/api/now")).status_code == 401  # the lost phone is out
        again = await owner.post("/sessions/end", data={"session": ben_session.id,
                                                        "csrf": csrf_of(page)})  # fmt: skip
        assert again.status_code == 400 and "that session has ended already" in again.text
        mine = await owner.post("/accounts/remove", data={"user": OWNER, "csrf": csrf_of(page)})
        assert mine.status_code == 400 and "the owner&#39;s account stays" in mine.text
        gone = await owner.post("/accounts/remove", data={"user": "ben", "csrf": csrf_of(page)})
        assert gone.status_code == 200 and "<li>ben (reader)" not in gone.text
        assert (await login(ben, "ben", "a-reader-password")).status_code == 401
    assert web.events("web-session-ended") == ["anna ended a session of 'ben'"]
    assert web.events("web-account")[-1] == "anna removed reader 'ben'"
