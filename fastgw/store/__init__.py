"""Durable state in one SQLite file (``store:`` in the config): API tokens and the audit log.

Usage records and async jobs will live here too; the schema is versioned (``sqlite.MIGRATIONS``)
so they can be added without touching existing tables.
"""

from __future__ import annotations

from ..config import Config
from .audit import AuditLog
from .sqlite import Store, StoreError, connect


def open_store(config: Config) -> Store:
    """The store named by ``config.store``; nothing is opened until the first query (after fork)."""
    return Store(config.store_path())


__all__ = ["AuditLog", "Store", "StoreError", "connect", "open_store"]
