"""Who a certificate speaks for: a name, a role, and the addresses it may use (XMPP, DNS, IP).

In a certificate the name is the subject CN, the role the OU; the XMPP address is carried in the
SAN both as an id-on-xmppAddr otherName (RFC 6120, what XMPP servers look for) and as an
`xmpp:` URI (what generic tools show)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

ORGANISATION = "Homeflex"
ID_ON_XMPP_ADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class Role(StrEnum):
    """What a party is allowed to be; agents' permissions are granted per role."""

    HOME = "home"  # a gateway and the home agent inside it
    AGGREGATOR = "aggregator"
    DSO = "dso"
    FORECASTER = "forecaster"
    SERVICE = "service"  # a server: XMPP, MQTT broker, enrollment, ingest
    DEVICE = "device"  # a field device that speaks TLS (Modbus/TCP Security)
    OPERATOR = "operator"  # a person at the aggregator running `homeflex pki`
    RELEASE = "release"  # signs update bundles


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    xmpp: str | None = None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"identity name {self.name!r}: use 1-63 lower-case letters, digits, '.' or '-'"
            )
        if self.xmpp is not None and not re.match(r"^[^@/\s]+@[^@/\s]+$", self.xmpp):
            raise ValueError(f"XMPP address {self.xmpp!r}: expected a bare address user@domain")
        for ip in self.ips:
            ipaddress.ip_address(ip)  # raises ValueError naming the bad address

    def subject(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, self.name),
            ]
        )

    def alt_names(self) -> list[x509.GeneralName]:
        # every certificate has a SAN: verifiers of client certificates require one
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(f"urn:homeflex:{self.role.value}:{self.name}")
        ]
        names += [x509.DNSName(d) for d in self.dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in self.ips]
        if self.xmpp:
            names.append(x509.OtherName(ID_ON_XMPP_ADDR, _der_utf8(self.xmpp)))
            names.append(x509.UniformResourceIdentifier(f"xmpp:{self.xmpp}"))
        return names

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> Identity:
        """The identity a certificate of ours carries; ValueError when it carries none."""
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        if len(cn) != 1 or len(ou) != 1:
            raise ValueError(f"certificate {cert.subject.rfc4514_string()}: no Homeflex identity")
        try:
            role = Role(str(ou[0].value))
        except ValueError:
            raise ValueError(f"certificate {cert.subject.rfc4514_string()}: unknown role") from None
        xmpp = None
        dns: tuple[str, ...] = ()
        ips: tuple[str, ...] = ()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            pass
        else:
            dns = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
            for other in san.get_values_for_type(x509.OtherName):
                if other.type_id == ID_ON_XMPP_ADDR:
                    xmpp = _parse_der_utf8(other.value)
        return cls(str(cn[0].value), role, xmpp, dns, ips)


def _der_utf8(text: str) -> bytes:
    """DER encoding of a UTF8String (tag 12): the otherName's value."""
    raw = text.encode()
    if len(raw) >= 128:
        raise ValueError(f"XMPP address {text!r} is too long")
    return bytes([0x0C, len(raw)]) + raw


def _parse_der_utf8(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x0C or der[1] != len(der) - 2:
        raise ValueError("id-on-xmppAddr: not a short DER UTF8String")
    return der[2:].decode()
