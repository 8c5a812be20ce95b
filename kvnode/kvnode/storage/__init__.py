"""Storage layer: durable records and hints in SQLite (WAL) with group commit."""

from kvnode.storage.records import Record, newest, supersedes
from kvnode.storage.engine import FSYNC_POLICIES, Store

__all__ = ["FSYNC_POLICIES", "Record", "Store", "newest", "supersedes"]
