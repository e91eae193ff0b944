"""One-time enrollment codes: random, short enough to type from a sheet of paper, and stored
only as a hash.

A code is 16 characters of Crockford's base32 (no I, L, O or U, so nothing reads as something
else) in 4 groups of 4: 80 random bits. The stored hash is a plain SHA-256 without salt because
the service must find the box from the code alone; with 80 bits of entropy neither a guess over
the network (rate-limited) nor a brute force of a stolen hash is feasible."""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
GROUPS = 4
GROUP_LEN = 4
LENGTH = GROUPS * GROUP_LEN
# what people mistype for what is meant: Crockford's decoding rules
_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_HASH_DOMAIN = b"homeflex enrollment code\0"


class MalformedCode(ValueError):
    """Text that cannot be an enrollment code at all (wrong length or characters)."""


def new_code() -> str:
    """A fresh code, e.g. `7KQ2-M9XC-4TNB-HR0F`."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + GROUP_LEN] for i in range(0, LENGTH, GROUP_LEN))


def normalise(text: str) -> str:
    """The 16 significant characters of a typed code: case, dashes and spaces do not matter,
    O/I/L count as 0/1. MalformedCode when what remains is not a code."""
    compact = "".join(text.split()).replace("-", "").upper().translate(_READS_AS)
    if len(compact) != LENGTH:
        raise MalformedCode(f"an enrollment code has {LENGTH} characters, this one {len(compact)}")
    bad = sorted({c for c in compact if c not in ALPHABET})
    if bad:
        raise MalformedCode(f"an enrollment code has no {''.join(bad)!r} in it")
    return compact


def code_hash(text: str) -> str:
    """What the register keeps of a code (hex SHA-256 of its normalised form)."""
    return hashlib.sha256(_HASH_DOMAIN + normalise(text).encode()).hexdigest()
