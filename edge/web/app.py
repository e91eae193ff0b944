"""The homeowner's web page on the box (FastAPI, pages rendered on the server with Jinja2, a
little plain JavaScript for live values; nothing fetched from elsewhere: the box may be
offline), and the JSON API behind it (`/api/...`, described at `/api/openapi.json`).

Guards, in the order a request meets them (`Guard`, an ASGI middleware, then each route):
- a body over `MAX_BODY` bytes, and a path with `..` in it (also percent-encoded), are refused
  before any route runs;
- a request that changes something (POST) from another site is refused: a browser marks it
  with `Sec-Fetch-Site: cross-site` or an `Origin` that is not the box; with a session it must
  also carry the session's CSRF token (form field `csrf` or header `X-CSRF-Token`), and the
  login and claim forms a token that matches their own cookie (`hf_pre`);
- pages need a session (else the login page; before the box is claimed, the claim page), API
  calls a session too (else 401), and each route its role (else 403).
Every refusal is a security event (homeflex.security). Cookies are Secure, HttpOnly and
SameSite=Strict; every answer says `Content-Security-Policy: default-src 'self'`.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' Depends(...) in their
# annotations, which name closures of create_app
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from homeflex.edge.config import ModbusDeviceConfig
from homeflex.edge.devices.capabilities import DeviceError
from homeflex.edge.preferences import Neighbourhood, PreferenceError, Preferences, choice_of
from homeflex.edge.web import forms
from homeflex.edge.web.accounts import Accounts, Refused, Role, Session, same
from homeflex.edge.web.box import Box
from homeflex.edge.web.history import DEFAULT_COUNT, MAX_COUNT, Period, bar_chart_svg, to_csv
from homeflex.edge.web.plan_view import gantt_svg, local, span_text
from homeflex.security import SecurityLog

MAX_BODY = 64 * 1024  # bytes: every form and API call of the page is far smaller
SESSION_COOKIE = "hf_session"
PRE_COOKIE = "hf_pre"  # the login and claim forms' own CSRF token
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
TRAVERSAL = re.compile(r"(^|/)\.\.(/|$)")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Guard:
    """Refuses oversized bodies and traversing paths before any route (module docstring)."""

    def __init__(self, app: Asgi, security: SecurityLog) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client") or ("unknown", 0)
        raw = scope.get("raw_path", b"").decode("latin-1")
        if TRAVERSAL.search(unquote(unquote(raw))):
            self.security.record("web-traversal", peer[0], f"path {raw[:200]!r} refused")
            await _plain(send, 400, "a path may not go up ('..')")
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            self.security.record("web-oversized", peer[0], f"{length!r} bytes to {raw[:200]!r}")
            await _plain(send, 413, f"at most {MAX_BODY} bytes")
            return
        # the whole body is read here, at most MAX_BODY of it, so that one sent without its
        # length is refused the same way (a route's parser would call it malformed)
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                self.security.record("web-oversized", peer[0], f"over {MAX_BODY} bytes: {raw!r}")
                await _plain(send, 413, f"at most {MAX_BODY} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def again() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, again, send)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(box: Box, accounts: Accounts, security: SecurityLog) -> Asgi:
    app = FastAPI(title="Homeflex box", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None)  # fmt: skip
    templates = Jinja2Templates(directory=str(resources.files("homeflex.edge.web") / "templates"))
    templates.env.filters["local"] = lambda ts, fmt="%a %d %b %H:%M": (
        "—" if ts is None else f"{local(ts, box.utc_offset_h):{fmt}}"
    )
    static = Path(str(resources.files("homeflex.edge.web") / "static"))
    # follow_symlink: an editable install links the files one by one
    app.mount("/static", StaticFiles(directory=static, follow_symlink=True), name="static")

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def refuse(kind: str, request: Request, detail: str, status: int) -> HTTPException:
        security.record(kind, source(request), f"{request.method} {request.url.path}: {detail}")
        return HTTPException(status, detail)

    def same_site(request: Request) -> None:
        """A POST from another site is refused, whatever it carries."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise refuse("web-csrf", request, "a form from another site", 403)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise refuse("web-csrf", request, f"a form from {origin[:100]}", 403)

    def current(request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        return accounts.session(token) if token else None

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"box": box, **context},
                                          status_code=status)  # fmt: skip

    def signed_in(response: Response, token: str) -> Response:
        response.set_cookie(SESSION_COOKIE, token, secure=True, httponly=True, samesite="strict")
        response.delete_cookie(PRE_COOKIE, secure=True, httponly=True, samesite="strict")
        return response

    def form_page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A login or claim form with its own CSRF token, in the form and in a cookie."""
        pre = secrets.token_urlsafe(24)
        response = page(request, name, status, pre=pre, **context)
        response.set_cookie(PRE_COOKIE, pre, secure=True, httponly=True, samesite="strict")
        return response

    def pre_checked(request: Request, pre: str) -> None:
        same_site(request)
        cookie = request.cookies.get(PRE_COOKIE, "")
        if not cookie or not same(cookie, pre):
            raise refuse("web-csrf", request, "the form's token does not match", 403)

    def needs(
        role: Role | None = None, *, api: bool = False
    ) -> Callable[[Request], Awaitable[Session]]:
        """The route's guard: a live session (with `role`; an owner may do anything), and for a
        POST the session's CSRF token (header `X-CSRF-Token`, or form field `csrf`)."""

        async def check(request: Request) -> Session:
            s = current(request)
            if s is None:
                if api:
                    raise refuse("web-unauthenticated", request, "no session", 401)
                start = "/claim" if accounts.needs_claim() else "/login"
                raise HTTPException(303, headers={"Location": start})
            if role is not None and s.role not in (role, Role.OWNER):
                raise refuse("web-forbidden", request, f"{s.user} is {s.role}, not {role}", 403)
            if request.method == "POST":
                same_site(request)
                given = request.headers.get("x-csrf-token", "")
                if not given and "form" in request.headers.get("content-type", ""):
                    given = str((await request.form()).get("csrf", ""))
                if not same(given, s.csrf):
                    raise refuse("web-csrf", request, "no or a wrong CSRF token", 403)
            return s

        return check

    # --- first boot and login ------------------------------------------------------------------

    @app.get("/claim", response_class=HTMLResponse, include_in_schema=False)
    def claim_form(request: Request) -> Response:
        if not accounts.needs_claim():
            return RedirectResponse("/login", 303)
        return form_page(request, "claim.html")

    @app.post("/claim", include_in_schema=False)
    def claim(
        request: Request,
        code: Annotated[str, Form(max_length=64)] = "",
        user: Annotated[str, Form(max_length=64)] = "",
        password: Annotated[str, Form(max_length=256)] = "",
        again: Annotated[str, Form(max_length=256)] = "",
        pre: Annotated[str, Form(max_length=64)] = "",
    ) -> Response:
        pre_checked(request, pre)
        if password != again:
            return form_page(request, "claim.html", 400, error="the two passwords differ",
                             user=user)  # fmt: skip
        try:
            _, token = accounts.claim(code, user, password, source(request))
        except Refused as exc:
            return form_page(request, "claim.html", 400, error=str(exc), user=user)
        return signed_in(RedirectResponse("/", 303), token)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        if accounts.needs_claim():
            return RedirectResponse("/claim", 303)
        return form_page(request, "login.html")

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        user: Annotated[str, Form(max_length=64)] = "",
        password: Annotated[str, Form(max_length=256)] = "",
        pre: Annotated[str, Form(max_length=64)] = "",
    ) -> Response:
        pre_checked(request, pre)
        try:
            _, token = accounts.login(user, password, source(request))
        except Refused as exc:
            return form_page(request, "login.html", 401, error=str(exc), user=user)
        return signed_in(RedirectResponse("/", 303), token)

    @app.post("/logout", include_in_schema=False)
    def logout(s: Annotated[Session, Depends(needs())]) -> Response:
        accounts.logout(s)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="strict")
        return response

    # --- pages ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def now_page(request: Request, s: Annotated[Session, Depends(needs())]) -> Response:
        return page(request, "now.html", session=s, live=box.live())

    @app.get("/security", response_class=HTMLResponse, include_in_schema=False)
    def security_page(
        request: Request, s: Annotated[Session, Depends(needs(Role.OWNER))]
    ) -> Response:
        return security_view(request, s)

    def security_view(request: Request, s: Session, status: int = 200, **ctx: Any) -> Response:
        events = security.events()[-50:][::-1]
        return page(request, "security.html", status, session=s, events=events,
                    sessions=accounts.sessions(), users=accounts.users(), **ctx)  # fmt: skip

    @app.post("/accounts", include_in_schema=False)
    def add_account(
        request: Request,
        s: Annotated[Session, Depends(needs(Role.OWNER))],
        user: Annotated[str, Form(max_length=64)] = "",
        password: Annotated[str, Form(max_length=256)] = "",
        role: Annotated[str, Form(max_length=16)] = "",
    ) -> Response:
        """An account for the installer or a reader (the owner's own comes with the claim)."""
        if role not in (Role.INSTALLER, Role.READER):
            return security_view(
                request, s, 400, error=f"role: {role!r} is not installer or reader"
            )
        try:
            accounts.add_user(s, user, password, Role(role))
        except Refused as exc:
            return security_view(request, s, 400, error=str(exc))
        return security_view(request, s, note=f"{user} can log in now, as {role}.")

    @app.post("/accounts/remove", include_in_schema=False)
    def remove_account(
        request: Request,
        s: Annotated[Session, Depends(needs(Role.OWNER))],
        user: Annotated[str, Form(max_length=64)] = "",
    ) -> Response:
        try:
            accounts.remove_user(s, user)
        except Refused as exc:
            return security_view(request, s, 400, error=str(exc))
        return security_view(request, s, note=f"{user}'s account is removed.")

    @app.post("/sessions/end", include_in_schema=False)
    def end_session(
        request: Request,
        s: Annotated[Session, Depends(needs(Role.OWNER))],
        session: Annotated[str, Form(max_length=64)] = "",
    ) -> Response:
        try:
            accounts.end_session(s, session)
        except Refused as exc:
            return security_view(request, s, 400, error=str(exc))
        if session == s.id:  # the owner's own: as a logout
            return RedirectResponse("/login", 303)
        return security_view(request, s, note="The session is ended.")

    # --- plan ----------------------------------------------------------------------------------

    @app.get("/plan", response_class=HTMLResponse, include_in_schema=False)
    def plan_page(
        request: Request, s: Annotated[Session, Depends(needs())], changed: str = ""
    ) -> Response:
        pv = box.plan()
        chart = gantt_svg(pv, box.utc_offset_h) if pv is not None else ""
        rows = [(r, span_text(pv, r, box.utc_offset_h)) for r in pv.runs] if pv else []
        return page(request, "plan.html", session=s, plan=pv, chart=chart, rows=rows,
                    problem=box.plan_problem(), changed=changed)  # fmt: skip

    @app.get("/api/plan")
    def api_plan(s: Annotated[Session, Depends(needs(api=True))]) -> dict[str, Any]:
        """The plan in force: each device's runs with the reason for each, and its expected
        cost against the baseline (€, over the plan's horizon)."""
        pv = box.plan()
        if pv is None:
            return {"plan": None, "problem": box.plan_problem()}
        return {"plan": {**asdict(pv), "saving_eur": pv.saving_eur}, "problem": box.plan_problem()}

    # --- history -------------------------------------------------------------------------------

    @app.get("/history", response_class=HTMLResponse, include_in_schema=False)
    async def history_page(
        request: Request, s: Annotated[Session, Depends(needs())], period: Period = "day"
    ) -> Response:
        buckets = await box.history(period, DEFAULT_COUNT[period])
        return page(request, "history.html", session=s, period=period, buckets=buckets,
                    chart=bar_chart_svg(buckets))  # fmt: skip

    @app.get("/history.csv", include_in_schema=False)
    async def history_csv(
        s: Annotated[Session, Depends(needs())],
        period: Period = "day",
        count: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 400,
    ) -> Response:
        buckets = await box.history(period, count)
        name = f"{box.gateway_id}-{period}.csv"
        return Response(
            to_csv(buckets, period),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/history")
    async def api_history(
        s: Annotated[Session, Depends(needs(api=True))],
        period: Period = "day",
        count: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 31,
    ) -> dict[str, Any]:
        """Energy (kWh) and cost (€) by local day, ISO week or month, oldest first."""
        return {"period": period, "buckets": [asdict(b) for b in await box.history(period, count)]}

    # --- devices -------------------------------------------------------------------------------

    def devices_page(request: Request, s: Session, status: int = 200, **ctx: Any) -> Response:
        return page(request, "devices.html", status, session=s, devices=box.devices(),
                    templates=box.templates(), **ctx)  # fmt: skip

    @app.get("/devices", response_class=HTMLResponse, include_in_schema=False)
    def devices(request: Request, s: Annotated[Session, Depends(needs())]) -> Response:
        return devices_page(request, s)

    @app.get("/api/devices")
    def api_devices(s: Annotated[Session, Depends(needs(api=True))]) -> list[dict[str, Any]]:
        """Each device's state, the time of its last good reading and what is wrong with it."""
        return [asdict(d) for d in box.devices()]

    @app.post("/devices/permit-join", include_in_schema=False)
    async def permit_join(
        request: Request,
        s: Annotated[Session, Depends(needs(Role.INSTALLER))],
        seconds: Annotated[int, Form(ge=0, le=254)] = 120,
    ) -> Response:
        try:
            await box.permit_join(seconds)
        except (DeviceError, ValueError) as exc:
            return devices_page(request, s, 409, error=f"pairing could not start: {exc}")
        note = (f"The box accepts new Zigbee devices for {seconds} s: put the device in pairing "
                "mode now." if seconds else "Pairing closed.")  # fmt: skip
        return devices_page(request, s, note=note)

    @app.post("/devices/modbus", include_in_schema=False)
    async def modbus(
        request: Request,
        s: Annotated[Session, Depends(needs(Role.INSTALLER))],
        id: Annotated[str, Form(max_length=40)] = "",
        template: Annotated[str, Form(max_length=64)] = "",
        host: Annotated[str, Form(max_length=253)] = "",
        port: Annotated[str, Form(max_length=5)] = "502",
        unit: Annotated[str, Form(max_length=3)] = "1",
        add: Annotated[str, Form(max_length=3)] = "",
    ) -> Response:
        typed = {"id": id, "template": template, "host": host, "port": port, "unit": unit}
        try:
            cfg = ModbusDeviceConfig.model_validate({"protocol": "modbus", **typed})
        except ValidationError as exc:
            words = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return devices_page(request, s, 400, error=words, typed=typed)
        if template not in box.templates():
            return devices_page(request, s, 400, error=f"template: no template {template!r}",
                                typed=typed)  # fmt: skip
        problems = await box.test_modbus(cfg)
        if problems:
            return devices_page(
                request,
                s,
                400,
                typed=typed,
                error="The connection test failed: " + "; ".join(problems),
            )
        if add != "yes":
            return devices_page(
                request, s, typed=typed, note=f"{host}:{port} unit {unit} answers as a {template}."
            )
        try:
            box.add_modbus(cfg)
        except ValueError as exc:
            return devices_page(request, s, 400, error=str(exc), typed=typed)
        return devices_page(request, s, note=f"{id} added: it is read from now on.")

    # --- preferences ---------------------------------------------------------------------------

    def preferences_page(request: Request, s: Session, status: int = 200, **ctx: Any) -> Response:
        devices = box.planned_devices()
        current = {d.id: choice_of(d) for d in devices}
        return page(request, "preferences.html", status, session=s, devices=devices,
                    current=current, bands=forms.MAX_BANDS, **ctx)  # fmt: skip

    @app.get("/preferences", response_class=HTMLResponse, include_in_schema=False)
    def preferences(request: Request, s: Annotated[Session, Depends(needs())]) -> Response:
        return preferences_page(request, s)

    @app.post("/preferences", include_in_schema=False)
    async def save_preferences(
        request: Request, s: Annotated[Session, Depends(needs(Role.OWNER))]
    ) -> Response:
        form = await request.form()
        try:
            prefs = forms.preferences(form, box.planned_devices(), box.preferences())
            before = box.set_preferences(prefs, f"preferences changed by {s.user}")
        except (forms.FormError, PreferenceError) as exc:
            return preferences_page(request, s, 400, error=str(exc), typed=dict(form))
        fresh = await box.wait_for_plan(before)
        return RedirectResponse(f"/plan?changed={'yes' if fresh else 'pending'}", 303)

    @app.get("/api/preferences")
    def api_preferences(s: Annotated[Session, Depends(needs(api=True))]) -> Preferences:
        """The owner's choices (those that replace the installer's values) and consents."""
        return box.preferences()

    @app.post("/api/preferences")
    async def api_set_preferences(
        prefs: Preferences, s: Annotated[Session, Depends(needs(Role.OWNER, api=True))]
    ) -> dict[str, Any]:
        """Replace the owner's choices; the home is planned again with them. `planned` is
        false when the new plan was not ready in time (it follows)."""
        try:
            before = box.set_preferences(prefs, f"preferences changed by {s.user}")
        except PreferenceError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"planned": await box.wait_for_plan(before)}

    # --- neighbourhood -------------------------------------------------------------------------

    def today() -> Any:
        return datetime.fromtimestamp(box.now() + box.utc_offset_h * 3600, UTC).date()

    @app.get("/neighbourhood", response_class=HTMLResponse, include_in_schema=False)
    def neighbourhood(request: Request, s: Annotated[Session, Depends(needs())]) -> Response:
        return page(request, "neighbourhood.html", session=s, n=box.neighbourhood(),
                    choice=box.preferences().neighbourhood, today=today())  # fmt: skip

    @app.post("/neighbourhood", include_in_schema=False)
    async def save_neighbourhood(
        request: Request, s: Annotated[Session, Depends(needs(Role.OWNER))]
    ) -> Response:
        form = await request.form()
        current = box.preferences()
        try:
            choice = forms.neighbourhood(form, current.neighbourhood, today())
        except forms.FormError as exc:
            return page(request, "neighbourhood.html", 400, session=s, n=box.neighbourhood(),
                        choice=current.neighbourhood, today=today(), error=str(exc))  # fmt: skip
        box.set_preferences(current.model_copy(update={"neighbourhood": choice}),
                            f"neighbourhood choices changed by {s.user}")  # fmt: skip
        return RedirectResponse("/neighbourhood", 303)

    @app.get("/api/neighbourhood")
    def api_neighbourhood(s: Annotated[Session, Depends(needs(api=True))]) -> dict[str, Any]:
        """The aggregator, the orders the home took and what they earned (€)."""
        return asdict(box.neighbourhood())

    @app.post("/api/neighbourhood")
    async def api_set_neighbourhood(
        choice: Neighbourhood, s: Annotated[Session, Depends(needs(Role.OWNER, api=True))]
    ) -> Neighbourhood:
        """Take part or not (always, or not on some days) and what data may leave the house."""
        current = box.preferences()
        box.set_preferences(current.model_copy(update={"neighbourhood": choice}),
                            f"neighbourhood choices changed by {s.user}")  # fmt: skip
        return choice

    # --- suggestions ---------------------------------------------------------------------------

    @app.get("/suggestions", response_class=HTMLResponse, include_in_schema=False)
    async def suggestions(request: Request, s: Annotated[Session, Depends(needs())]) -> Response:
        return page(request, "suggestions.html", session=s, items=await box.suggestions())

    @app.get("/api/suggestions")
    async def api_suggestions(
        s: Annotated[Session, Depends(needs(api=True))],
    ) -> list[dict[str, Any]]:
        """What would lower the bill, from the home's own data, with the saving it would bring."""
        return [asdict(x) for x in await box.suggestions()]

    # --- API -----------------------------------------------------------------------------------

    @app.get("/api/now")
    def api_now(s: Annotated[Session, Depends(needs(api=True))]) -> dict[str, Any]:
        """Power now, W per flow (+ taken from the grid or used), and when it was read."""
        return box.live()

    @app.get("/api/session")
    def api_session(s: Annotated[Session, Depends(needs(api=True))]) -> dict[str, Any]:
        """Who is signed in, with which role, and the CSRF token changes must carry."""
        return {"user": s.user, "role": s.role.value, "csrf": s.csrf}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        words = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'][1:]) or 'the request'}: {e['msg']}"
            for e in exc.errors()
        )
        security.record("web-bad-request", source(request),
                        f"{request.method} {request.url.path}: {words}"[:500])  # fmt: skip
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": words}, 422)
        return page(request, "error.html", 400, message=words)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 303 and exc.headers:
            return RedirectResponse(exc.headers["Location"], 303)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, exc.status_code)
        return page(request, "error.html", exc.status_code, message=exc.detail)

    return Guard(app, security)
