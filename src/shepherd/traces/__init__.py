"""Traces: the SQLite trace store (a content-addressed cache of generations), the sweep driver, labels
and exports (replaying policies over them is `shepherd.evaluation.replay`). Read `store.py` for the tables, `sweep.py` for one item's sweep, `cached.py` for how
live, sweep and replay share one code path."""

from .cached import CachedBackend, HintMapping, MissingGeneration
from .records import Graded, HintLevel, ItemSweep, Label
from .store import StoreError, TraceStore

__all__ = ["CachedBackend", "Graded", "HintLevel", "HintMapping", "ItemSweep", "Label", "MissingGeneration",
           "StoreError", "TraceStore"]
