"""The TLS side of a simulated Modbus/TCP Security device: a server context that presents the
device's certificate and admits only clients with a certificate chaining to the configured root
(mutual TLS, as the Modbus/TCP Security specification requires), TLS 1.2 or later."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from homeflex_sim.homefile import HomeFileError, TlsSpec

log = logging.getLogger(__name__)


def server_context(spec: TlsSpec, devices: str) -> ssl.SSLContext:
    """The context for the port serving `devices` (their ids, for messages); HomeFileError
    naming the file when one cannot be used."""
    files = {"cert": spec.cert, "key": spec.key, "ca": spec.ca, "crl": spec.crl}
    for what, path in files.items():
        if path is not None and not path.is_file():
            raise HomeFileError(f"devices {devices}: tls: {what}: {path} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    _load(devices, "cert/key", spec.cert, lambda: ctx.load_cert_chain(spec.cert, spec.key))
    _load(devices, "ca", spec.ca, lambda: ctx.load_verify_locations(cafile=str(spec.ca)))
    crl = spec.crl
    if crl is None:
        log.warning("devices %s: no `crl:`; revoked client certificates are accepted", devices)
    else:
        _load(devices, "crl", crl, lambda: ctx.load_verify_locations(cafile=str(crl)))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _load(devices: str, what: str, path: Path, load: Callable[[], object]) -> None:
    try:
        load()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise HomeFileError(
            f"devices {devices}: tls: {what}: cannot use {path} ({exc}); give PEM files"
        ) from None
