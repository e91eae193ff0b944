"""Envelope benchmark: envelopes sealed and opened per second on one core (an aggregator
exchanging 200-byte messages with 100 homes), the wire size, and where an open's time goes.
Usage: PYTHONPATH=. python -m bench.envelope [--count 4000] [--homes 100] [--payload 200]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.machine import machine
from homeflex.agents.chains import ChainVerifier
from homeflex.agents.envelope import Receiver, Sender, canonical_json, seal
from homeflex.agents.permissions import Permissions
from homeflex.agents.replay import ReplayCache
from homeflex.clock import SystemClock
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import init_fleet, init_root
from homeflex.pki.identity import Identity, Role
from homeflex.pki.trust import TrustStore
from homeflex.security import SecurityLog

PASSPHRASE = b"bench root passphrase"


def per_second(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000, help="envelopes sealed and opened")
    parser.add_argument("--homes", type=int, default=100, help="distinct senders")
    parser.add_argument("--payload", type=int, default=200, help="payload bytes")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        init_root(base / "root", PASSPHRASE)
        fleet = init_fleet(base / "root", PASSPHRASE, base / "fleet")
        agg_id = Identity("agg-1", Role.AGGREGATOR, xmpp="agg-1@xmpp.bench")
        agg = issue_credentials(fleet, agg_id, base / "agg")
        homes = [
            Sender.of(
                issue_credentials(
                    fleet,
                    Identity(f"box-{i:04d}", Role.HOME, xmpp=f"box-{i:04d}@xmpp.bench"),
                    base / f"box-{i}",
                )
            )
            for i in range(args.homes)
        ]
        agg_cert = agg.certificate()
        trust = TrustStore.of(agg)
        replay = ReplayCache(base / "replay.db")
        receiver = Receiver(
            agg,
            trust,
            replay,
            Permissions(agg_id, homes=frozenset(h.identity.name for h in homes)),
            SecurityLog(base / "security.jsonl"),
            SystemClock(),
        )
        payload = os.urandom(args.payload)

        # sealing: each home in turn, p-plans to the aggregator
        wires: list[tuple[str, str]] = []
        t = time.perf_counter()
        for n in range(args.count):
            home = homes[n % len(homes)]
            wire = seal(payload, type="p-plan", sender=home, recipient=agg_cert)
            wires.append((wire, home.identity.xmpp or ""))
        sealed = args.count / (time.perf_counter() - t)

        # opening: the first envelope of each home verifies its chain, the rest hit the cache
        t = time.perf_counter()
        for wire, jid in wires:
            receiver.open(wire, jid)
        opened = args.count / (time.perf_counter() - t)
        chains = receiver.chains
        hits, misses = chains.hits, chains.misses

        # where an open's time goes: each step alone, on the same data
        wire, jid = wires[0]
        obj = json.loads(wire)
        chain_b64 = tuple(obj["chain"])
        now = time.time()

        def cold_verify() -> None:
            ChainVerifier(trust).verify(chain_b64, now)  # a fresh, empty cache each time

        n = max(200, args.count // 10)
        home = homes[0]
        sig_data = os.urandom(300)
        sig = home.key.sign(sig_data, ec.ECDSA(hashes.SHA256()))
        agg_key = agg.key()
        eph = ec.generate_private_key(ec.SECP256R1()).public_key()
        aes = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        ct = aes.encrypt(nonce, payload, b"hdr")
        counter = iter(range(10**9))
        steps = {
            "parse + canonical check": per_second(
                lambda: canonical_json(json.loads(wire)).decode() == wire, n
            ),
            "chain verify (uncached)": per_second(cold_verify, n // 4),
            "chain verify (cached)": per_second(lambda: chains.verify(chain_b64, now), n),
            "ECDSA verify": per_second(
                lambda: home.key.public_key().verify(sig, sig_data, ec.ECDSA(hashes.SHA256())), n
            ),
            "ECDH + point decode": per_second(
                lambda: agg_key.exchange(
                    ec.ECDH(),
                    ec.EllipticCurvePublicKey.from_encoded_point(
                        ec.SECP256R1(),
                        eph.public_bytes(
                            serialization.Encoding.X962,
                            serialization.PublicFormat.CompressedPoint,
                        ),
                    ),
                ),
                n,
            ),
            "AES-256-GCM decrypt": per_second(lambda: aes.decrypt(nonce, ct, b"hdr"), n),
            "replay cache insert": per_second(
                lambda: replay.first_time("bench", f"{next(counter):032x}", now + 600, now), n
            ),
            "ECDSA sign (seal)": per_second(
                lambda: home.key.sign(sig_data, ec.ECDSA(hashes.SHA256())), n
            ),
            "ephemeral keygen (seal)": per_second(
                lambda: ec.generate_private_key(ec.SECP256R1()), n
            ),
        }
        replay.close()
        fleet.close()

    print(f"machine:   {machine()}, cryptography {version('cryptography')}, pinned to 1 core")
    print(
        f"workload:  {args.count} envelopes of {args.payload}-byte payloads from {args.homes} "
        f"homes to one aggregator; wire {len(wires[0][0].encode())} bytes each"
    )
    print(f"seal:      {sealed:,.0f} envelopes/s")
    print(
        f"open:      {opened:,.0f} envelopes/s (chain cache: {hits} hits, {misses} misses; "
        "replay cache on disk, WAL, synchronous=NORMAL)"
    )
    print("per step (operations/s and µs each, measured alone):")
    for name, rate in steps.items():
        print(f"  {name:26} {rate:10,.0f}/s {1e6 / rate:8.1f} µs")


if __name__ == "__main__":
    main()
