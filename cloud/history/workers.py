"""Ingest workers: batch handlers in processes of their own.

One Python process verifies and stores at most one core's worth of batches (the interpreter
lock), and at 1,000 boxes a second the ingest's front (paho's TLS and MQTT work, the
acknowledgements) already takes part of that core. So the front hands groups of raw batches to
worker processes over pipes; each worker opens its own connection to the history (SQLite in WAL
mode serialises the writers' transactions; the replay check and the box totals are read inside
them, so two workers never store the same batch twice) and answers with outcomes only. Workers
ignore Ctrl-C and stop when the front closes their pipe, or dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from homeflex.cloud.history.handler import BatchHandler, Outcome
from homeflex.cloud.history.layout import HistoryDir
from homeflex.pki.bundle import Credentials

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0  # a spawned worker imports the stack and opens the history


class WorkerError(Exception):
    """A worker could not handle a group: it raised (its message), or it died and was started
    again. The group's batches are not acknowledged; their boxes send them again."""


def _serve(root: str, creds_dir: str, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when workers stop
    handler = BatchHandler.open(HistoryDir(Path(root)), Credentials.load(Path(creds_dir)))
    conn.send("ready")
    try:
        while True:
            try:
                group = conn.recv()
            except EOFError:  # the front is gone
                return
            if group is None:
                return
            try:
                conn.send(("ok", handler.handle_many(group)))
            except Exception as exc:  # a store error: say so, keep serving
                logging.getLogger(__name__).exception("ingest worker: %d batches", len(group))
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        handler.close()


class WorkerProcess:
    """A BatchHandler in a child process, with the same `handle_many`. Not thread-safe: one
    caller at a time (the ingest gives each worker its own dispatching thread)."""

    def __init__(self, data: HistoryDir, creds_dir: Path, name: str) -> None:
        self.data = data
        self.creds_dir = creds_dir
        self.name = name
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self.restarts = 0

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # the front has threads: never fork it
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(str(self.data.root), str(self.creds_dir), child),
            name=self.name,
            daemon=True,
        )
        proc.start()
        child.close()
        try:
            ready = parent.poll(START_TIMEOUT_S) and parent.recv() == "ready"
        except (EOFError, OSError):  # it died opening the history: its traceback is logged
            ready = False
        if not ready:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
            raise WorkerError(
                f"{self.name}: did not start in {START_TIMEOUT_S:.0f} s (exit code "
                f"{proc.exitcode}); the lines above say why"
            )
        self._proc, self._conn = proc, parent

    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            self._conn.send(list(messages))
            status, result = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self._stop()
            self.restarts += 1
            log.error("%s died (exit code %s); starting it again", self.name, code)
            self.start()
            raise WorkerError(f"{self.name} died with {len(messages)} batches: {exc}") from exc
        if status != "ok":
            raise WorkerError(f"{self.name}: {result}")
        outcomes: list[Outcome] = result
        return outcomes

    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # it may be gone already
                self._conn.send(None)
        self._stop()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
