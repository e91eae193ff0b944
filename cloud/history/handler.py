"""Checking and storing telemetry batches: the work each ingest worker does.

`BatchHandler.handle_many` opens each batch (common/telemetry.py `open_batch`: the certificate
chains to our root, belongs to a home whose name is the topic's box, and signed the batch) and
stores the good ones in one transaction. It answers each message with an `Outcome` and logs
nothing itself: the ingest's front (cloud/history/ingest.py) records refusals in the one
security log and publishes the acknowledgements, so a handler can run in a worker process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from homeflex.agents.chains import ChainVerifier
from homeflex.cloud.history.keys import HistoryKeys, Identities
from homeflex.cloud.history.layout import HistoryDir
from homeflex.cloud.history.sqlite import SqliteHistory
from homeflex.cloud.history.store import HistoryStore, ReplayedBatch
from homeflex.pki.bundle import Credentials
from homeflex.pki.trust import TrustStore
from homeflex.telemetry import Ack, Batch, BatchRefused, open_batch


@dataclass(frozen=True)
class Accepted:
    """A batch stored: its acknowledgement, and how many of its items the history had."""

    ack: Ack
    duplicates: int


@dataclass(frozen=True)
class Refusal:
    """A batch not stored: `code` names the check (`telemetry-<code>` is its security event)."""

    code: str
    detail: str
    fields: dict[str, object] = field(default_factory=dict)


Outcome = Accepted | Refusal


class BatchHandler:
    def __init__(
        self,
        store: HistoryStore,
        keys: HistoryKeys,
        identities: Identities,
        verifier: ChainVerifier,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.identities = identities
        self.verifier = verifier
        self.now = now

    @classmethod
    def open(cls, data: HistoryDir, creds: Credentials) -> BatchHandler:
        """A handler on the history in `data`, trusting what `creds` trusts."""
        keys = HistoryKeys.load(data.keys)
        return cls(
            SqliteHistory(data.db, keys.integrity),
            keys,
            Identities(data.identities),
            ChainVerifier(TrustStore.of(creds)),
        )

    def close(self) -> None:
        self.store.close()
        self.identities.close()

    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        """Each (topic, payload) checked; the good ones stored in one transaction."""
        outcomes: list[Outcome | None] = [None] * len(messages)
        opened: list[tuple[int, str, Batch]] = []
        now = self.now()
        for n, (topic, payload) in enumerate(messages):
            try:
                batch = open_batch(payload, topic, self.verifier, now)
            except BatchRefused as exc:
                outcomes[n] = Refusal(exc.code, exc.detail, {"bytes": len(payload)})
                continue
            pid = self.keys.pid(batch.box)
            self.identities.remember(pid, batch.box)
            opened.append((n, pid, batch))
        if opened:
            received = self.now()
            results = self.store.add_many([(pid, batch, received) for _, pid, batch in opened])
            for (n, pid, batch), result in zip(opened, results, strict=True):
                if isinstance(result, ReplayedBatch):
                    self.store.count_replay(pid)
                    outcomes[n] = Refusal("replay", str(result), {"batch": batch.id})
                else:
                    outcomes[n] = Accepted(Ack(batch.id, result.new), result.duplicates)
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(messages), "every message has an outcome"
        return done
