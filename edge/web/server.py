"""The web page's HTTPS server, inside the gateway's event loop (uvicorn), with the box's own
certificate and key: the page works on the LAN when the internet is down.

The first start of an unclaimed box makes its setup code and writes it to `setup-code.txt`
(mode 0600) in the data directory, for the installer's report and the label on the box; it is
never logged. Once the owner has claimed the box the file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Generator
from pathlib import Path

import uvicorn

from homeflex.edge.web.accounts import Accounts
from homeflex.edge.web.app import create_app
from homeflex.edge.web.box import Box
from homeflex.security import SecurityLog

log = logging.getLogger(__name__)
SETUP_CODE_FILE = "setup-code.txt"
GRACE_S = 2


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the gateway handles SIGTERM and SIGINT itself


def write_setup_code(accounts: Accounts, data_dir: Path) -> Path | None:
    """The setup code's file, made on the first start of an unclaimed box; removed once the
    box is claimed. None when there is none to show."""
    path = data_dir / SETUP_CODE_FILE
    if not accounts.needs_claim():
        path.unlink(missing_ok=True)
        return None
    code = accounts.new_setup_code()
    if code is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(code + "\n")
        log.warning("web: the box is not claimed yet; its setup code is in %s", path)
    return path if path.exists() else None


async def serve(
    box: Box,
    accounts: Accounts,
    security: SecurityLog,
    sock: socket.socket,
    certfile: Path,
    keyfile: Path,
) -> None:
    """Serve the page on the bound `sock` over TLS until cancelled; then the open requests
    get `GRACE_S` to finish."""
    config = uvicorn.Config(
        create_app(box, accounts, security),
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        log_level="warning",
        lifespan="off",
        server_header=False,
        proxy_headers=False,  # nobody stands between the browser and the box
        timeout_graceful_shutdown=GRACE_S,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True  # uvicorn stops listening and closes its connections
        await task
        raise


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: any free one, read back with getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"web: cannot listen on {host}:{port} ({exc.strerror}); is it in use?"
        ) from None
    sock.listen(64)
    sock.setblocking(False)
    return sock
