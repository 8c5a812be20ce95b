"""Storage layer: durable records (a commit log, SQLite as its checkpointed index) and hints.

The engine lives in `kvnode.storage.engine` (imported where it is used, so that building the
CLI's parsers does not load sqlite3 and asyncio).
"""

from kvnode.storage.policy import FSYNC_POLICIES
from kvnode.storage.records import Record, newest, supersedes

__all__ = ["FSYNC_POLICIES", "Record", "newest", "supersedes"]
