"""A memory manager for ASGI services: releases memory after traffic spikes, bounds the work in
flight, and reports what it did. Copy this folder into any package; it imports only itself, the
standard library, psutil, prometheus-client and Starlette.

    memory = MemoryManager(CleanupConfig.from_env(), limit_bytes=500 * MB, namespace="myservice")
    memory.add_status_source("cache", lambda: {"entries": len(my_cache)})  # optional
    memory.install(app, status_token=os.environ.get("ADMIN_TOKEN"))  # GET /debug/memory
"""

from .bodyrate import BodyFloor
from .budget import BudgetError, MemoryBudget, split_budget
from .cleanup import CleanupConfig
from .document import StatusDocument, read_status
from .door import Door
from .gate import AdmissionConfig, RouteCost
from .manager import MemoryManager
from .measure import MB
from .outbound import StoredResponse
from .readers import Readers
from .release import ReleaseResult, force_release_memory
from .status import MemoryStatus

# RouteCost's name until 2026-12: a service that lifted an older copy keeps importing it.
GuardedRoute = RouteCost

__all__ = [
    "MB",
    "AdmissionConfig",
    "BodyFloor",
    "BudgetError",
    "CleanupConfig",
    "Door",
    "GuardedRoute",
    "RouteCost",
    "MemoryBudget",
    "MemoryManager",
    "MemoryStatus",
    "Readers",
    "ReleaseResult",
    "StatusDocument",
    "StoredResponse",
    "force_release_memory",
    "read_status",
    "split_budget",
]
