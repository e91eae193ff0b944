"""schemathesis against the box's OpenAPI description, on a real gateway planning a simulated
home over real HTTPS: generated calls to every operation, as the signed-in owner, and none gets
a server error. (The requests go from a worker thread: the gateway and its page run on this
test's event loop.)"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error

from homeflex.edge.gateway import Gateway
from tests.integration.simhome import SimHome
from tests.integration.test_web_pages import home  # noqa: F401  (the fixture)

EXAMPLES = 20  # per operation


class ChainOnly(HTTPAdapter):
    """Verifies the box's chain to the fleet CA; the box is reached by address, not name."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(ssl_context=self.ctx, assert_hostname=False)
        super().init_poolmanager(*args, **kwargs)


def fuzz(spec: dict[str, Any], base_url: str, client: httpx.AsyncClient, ca: str) -> list[str]:
    """Every operation, EXAMPLES generated calls each; the operations exercised."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    session = requests.Session()
    session.mount("https://", ChainOnly(ctx))
    session.cookies.update(dict(client.cookies))
    session.headers["X-CSRF-Token"] = client.headers["X-CSRF-Token"]
    schema = schemathesis.openapi.from_dict(spec)
    done = []
    for result in schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def call(case: Any) -> None:
            response = case.call(base_url=base_url, session=session)
            case.validate_response(response, checks=[not_a_server_error])

        call()
        done.append(f"{op.method.upper()} {op.path}")
    return done


async def test_no_generated_call_gets_a_server_error(
    home: tuple[SimHome, Gateway, httpx.AsyncClient],  # noqa: F811
) -> None:
    _, gw, client = home
    spec = (await client.get("/api/openapi.json")).json()
    assert gw.web_url is not None and gw.cfg.credentials is not None
    ca = str(gw.cfg.credentials / "ca.pem")
    done = await asyncio.to_thread(fuzz, spec, gw.web_url.rstrip("/"), client, ca)
    assert sorted(done) == [
        "GET /api/devices", "GET /api/history", "GET /api/neighbourhood", "GET /api/now",
        "GET /api/plan", "GET /api/preferences", "GET /api/session", "GET /api/suggestions",
        "POST /api/neighbourhood", "POST /api/preferences",
    ]  # fmt: skip
    # the box still plans and answers after it all
    assert (await client.get("/api/plan")).json()["plan"] is not None
