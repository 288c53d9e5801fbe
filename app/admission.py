"""The service's memory budget and admission control, from its settings to the manager's parts.

The manager knows nothing of this app: here the settings become a budget (each worker's share),
the bulk routes are declared with their cost factor, and a MAX_BODY_MB body is checked to fit.
"""

from __future__ import annotations

from app.config import MB, ConfigError, Settings
from app.memory import AdmissionConfig, BudgetError, MemoryBudget, MemoryManager, split_budget
from app.memory.measure import fmt_mb
from app.workload.routes import COST_FACTOR, GUARDED_ROUTES


def bulk_admission(settings: Settings, memory: MemoryManager) -> AdmissionConfig:
    """Admission for the bulk routes, for ``memory.install``; parts that do not fit stop
    startup."""
    budget = worker_budget(settings, memory.read_rss())
    check_guarded_routes_fit(settings, budget.inflight_bytes)
    return AdmissionConfig(
        budget=budget,
        routes=GUARDED_ROUTES,
        max_body_bytes=int(settings.max_body_mb * MB),
        queue_limit=settings.admission_queue,
        max_wait_seconds=settings.admission_max_wait_seconds,
        body_timeout_seconds=settings.body_timeout_seconds,
        limit_name="MAX_BODY_MB",
    )


def worker_budget(settings: Settings, start_rss: int) -> MemoryBudget:
    """This worker's share of the limit, split; parts that do not fit stop startup."""
    workers = settings.web_concurrency

    def share(total_mb: float | None) -> int | None:
        return None if total_mb is None else int(total_mb * MB / workers)

    try:
        return split_budget(
            limit_bytes=int(settings.worker_limit_mb * MB),
            base_bytes=start_rss,
            cache_bytes=int(settings.worker_cache_max_mb * MB),
            headroom_bytes=share(settings.memory_headroom_mb),
            inflight_bytes=share(settings.memory_inflight_mb),
            outbound_bytes=share(settings.memory_outbound_mb),
        )
    except BudgetError as exc:
        given = [
            name
            for name, value in (
                ("MEMORY_INFLIGHT_MB", settings.memory_inflight_mb),
                ("MEMORY_HEADROOM_MB", settings.memory_headroom_mb),
                ("MEMORY_OUTBOUND_MB", settings.memory_outbound_mb),
            )
            if value is not None
        ]
        names = ", ".join(["CACHE_MAX_MB", *given, "WEB_CONCURRENCY"])
        raise ConfigError(
            [
                f"configuration error: {names} do not fit MEMORY_LIMIT_MB "
                f"({settings.limit_mb:g} MB from {settings.limit_source}), per worker: {exc}"
            ]
        ) from None


def check_guarded_routes_fit(settings: Settings, inflight_bytes: int) -> None:
    """A body of MAX_BODY_MB must be admissible, or such requests would be refused forever."""
    largest = int(settings.max_body_mb * MB * COST_FACTOR)
    if largest > inflight_bytes:
        raise ConfigError(
            [
                f"configuration error: MAX_BODY_MB={settings.max_body_mb:g} needs "
                f"{fmt_mb(largest)} in flight ({COST_FACTOR:g}x its size), more than this "
                f"worker's in-flight budget of {fmt_mb(inflight_bytes)}: lower MAX_BODY_MB, "
                "CACHE_MAX_MB or WEB_CONCURRENCY, or raise MEMORY_LIMIT_MB"
            ]
        )
