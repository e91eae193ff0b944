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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from homeflex.edge.web.accounts import Accounts, Refused, Role, Session, same
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


@dataclass
class Box:
    """What the page shows of its gateway."""

    gateway_id: str
    live: Callable[[], dict[str, Any]]  # power now, W per flow (gateway.Gateway.live)


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
    static = Path(str(resources.files("homeflex.edge.web") / "static"))
    app.mount("/static", StaticFiles(directory=static), name="static")

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
        events = security.events()[-50:][::-1]
        return page(request, "security.html", session=s, events=events,
                    sessions=accounts.sessions())  # fmt: skip

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
