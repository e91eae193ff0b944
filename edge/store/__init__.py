"""The gateway's measurement store (SQLite): raw readings, PTU energies, data-quality events."""

from homeflex.edge.store.store import MinuteStats, PtuEnergy, QualityEvent, Store, StoreError

__all__ = ["MinuteStats", "PtuEnergy", "QualityEvent", "Store", "StoreError"]
