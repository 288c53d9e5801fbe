"""The reference workload: bulk routes, SQLite, a TTL- and size-bounded cache. Replace it."""

from app.workload.mount import BulkWorkload

__all__ = ["BulkWorkload"]
