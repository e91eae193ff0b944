"""The register of boxes: codes are single use, expire, are replaced by newer ones and are
kept as hashes only; box states move pending -> enrolled -> revoked only as the flows say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from homeflex.cloud.enroll.codes import normalise
from homeflex.cloud.enroll.registry import BoxState, CodeRefused, Registry, RegistryError


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path)
    yield reg
    reg.close()


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def refused(registry: Registry, code: str, now: datetime = NOW) -> str:
    with pytest.raises(CodeRefused) as err:
        registry.claim(code, now)
    return err.value.reason


def test_a_code_registers_a_pending_box_and_expires_after_seven_days(registry: Registry) -> None:
    issued = registry.new_code("box-0001", now=NOW)
    assert issued.expires == NOW + timedelta(days=7)
    box = registry.get("box-0001")
    assert box is not None and box.state is BoxState.PENDING
    assert box.code_expires == issued.expires and box.cert_serial is None


def test_a_code_is_used_once(registry: Registry) -> None:
    code = registry.new_code("box-0001", now=NOW).code
    assert registry.claim(code.lower(), NOW + timedelta(days=6)).name == "box-0001"
    assert refused(registry, code) == "used-code"
    box = registry.get("box-0001")
    assert box is not None and box.code_hash is None  # nothing outstanding any more


def test_an_expired_code_is_refused(registry: Registry) -> None:
    code = registry.new_code("box-0001", timedelta(hours=1), now=NOW).code
    assert refused(registry, code, NOW + timedelta(hours=1, seconds=1)) == "expired-code"
    assert registry.claim(code, NOW + timedelta(minutes=59)).name == "box-0001"


def test_an_unknown_code_is_refused(registry: Registry) -> None:
    registry.new_code("box-0001", now=NOW)
    assert refused(registry, "0000-0000-0000-0000") == "unknown-code"


def test_a_new_code_replaces_the_outstanding_one(registry: Registry) -> None:
    old = registry.new_code("box-0001", now=NOW).code
    new = registry.new_code("box-0001", now=NOW).code
    assert refused(registry, old) == "superseded-code"
    assert registry.claim(new, NOW).name == "box-0001"


def test_codes_are_stored_as_hashes_only(registry: Registry, tmp_path: Path) -> None:
    code = registry.new_code("box-0001", now=NOW).code
    registry.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("boxes.db*"))
    assert b"box-0001" in stored  # the file is the register, readable as such
    assert code.encode() not in stored and normalise(code).encode() not in stored


def test_an_enrolled_box_gets_a_new_code_only_as_a_replacement(registry: Registry) -> None:
    code = registry.new_code("box-0001", now=NOW).code
    registry.claim(code, NOW)
    registry.mark_enrolled("box-0001", 0xABC, "box-0001@xmpp.test", NOW)
    with pytest.raises(RegistryError, match=r"enrolled.*--replace"):
        registry.new_code("box-0001", now=NOW)
    registry.new_code("box-0001", replace=True, now=NOW)
    box = registry.get("box-0001")
    assert box is not None and box.state is BoxState.PENDING and box.cert_serial is None


def test_a_revoked_box_refuses_its_codes(registry: Registry) -> None:
    code = registry.new_code("box-0001", now=NOW).code
    registry.mark_revoked("box-0001", NOW)
    assert refused(registry, code) == "box-revoked"
    with pytest.raises(RegistryError, match="revoked"):
        registry.new_code("box-0001", now=NOW)
    box = registry.get("box-0001")
    assert box is not None and box.state is BoxState.REVOKED and box.revoked_at == NOW


def test_a_failed_issue_leaves_the_code_usable(registry: Registry) -> None:
    code = registry.new_code("box-0001", now=NOW).code
    with pytest.raises(RuntimeError), registry.transaction():
        registry.claim(code, NOW)
        raise RuntimeError("the CA refused")
    assert registry.claim(code, NOW).name == "box-0001"


def test_names_must_be_usable_in_certificates(registry: Registry) -> None:
    with pytest.raises(ValueError, match="identity name"):
        registry.new_code("Box 1")
    assert registry.boxes() == []


def test_two_connections_see_the_same_register(registry: Registry, tmp_path: Path) -> None:
    other = Registry.open(tmp_path)  # the CLI while the service runs
    code = other.new_code("box-0001", now=NOW).code
    other.close()
    assert registry.claim(code, NOW).name == "box-0001"
