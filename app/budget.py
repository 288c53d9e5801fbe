"""The service's memory budget and admission control, from its settings to the manager's parts.

The manager knows nothing of this app: here the settings become a budget (each worker's share),
with the long-lived memory the workloads hold set aside, and the routes they admit are checked
to admit their largest body. The workloads declare both through the frame (app/frame.py); this
module names none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.config import ConfigError, Settings
from app.frame import Admitted, Held
from app.memory import (
    AdmissionConfig,
    BodyFloor,
    BudgetError,
    MemoryBudget,
    MemoryManager,
    split_budget,
)
from app.memory.measure import MB, fmt_mb


def service_admission(
    settings: Settings, memory: MemoryManager, admitted: Sequence[Admitted], held: Sequence[Held]
) -> AdmissionConfig:
    """Admission for the admitted routes, for ``memory.install``; parts that do not fit stop
    startup."""
    budget = worker_budget(settings, memory.read_rss(), held)
    for rule in admitted:
        check_admission_fits(rule, budget.inflight_bytes, [part.setting for part in held])
    # The gate has one body limit: the largest rule's (each workload still checks its own).
    widest = max(admitted, key=lambda g: g.max_body_bytes, default=None)
    return AdmissionConfig(
        budget=budget,
        routes=[route for rule in admitted for route in rule.routes],
        max_body_bytes=widest.max_body_bytes if widest else 0,
        queue_limit=settings.admission_queue,
        max_wait_seconds=settings.admission_max_wait_seconds,
        body_timeout_seconds=settings.body_timeout_seconds,
        # The floor the edge keeps on uvicorn's h11, here for every server (docs/overload.md).
        body_floor=BodyFloor(settings.min_body_rate_bytes, settings.min_rate_grace_seconds),
        limit_name=widest.limit_name if widest else "the body size limit",
    )


def worker_budget(settings: Settings, start_rss: int, held: Sequence[Held] = ()) -> MemoryBudget:
    """This worker's share of the limit, split; parts that do not fit stop startup."""
    workers = settings.web_concurrency

    def share(total_mb: float | None) -> int | None:
        return None if total_mb is None else int(total_mb * MB / workers)

    try:
        return split_budget(
            limit_bytes=int(settings.worker_limit_mb * MB),
            base_bytes=start_rss,
            cache_bytes=sum(part.nbytes for part in held),
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
        names = ", ".join([*(part.setting for part in held), *given, "WEB_CONCURRENCY"])
        raise ConfigError(
            [
                f"configuration error: {names} do not fit MEMORY_LIMIT_MB "
                f"({settings.limit_mb:g} MB from {settings.limit_source}), per worker: {exc}"
            ]
        ) from None


def check_admission_fits(rule: Admitted, inflight_bytes: int, held: Sequence[str] = ()) -> None:
    """The costliest request an admitted route takes (its largest body, or the reply it declares)
    must be admissible, or such requests would be refused forever."""
    worst = max(rule.routes, key=lambda route: route.cost(rule.max_body_bytes), default=None)
    if worst is None:
        return
    largest = worst.cost(rule.max_body_bytes)
    if largest <= inflight_bytes:
        return
    if worst.reply_bytes:
        what = f"{worst.method} {worst.path} declares a reply that needs {fmt_mb(largest)}"
        lower = [*held, "its reply_bytes"]
    else:
        what = (
            f"{rule.limit_name}={rule.max_body_bytes / MB:g} needs {fmt_mb(largest)} "
            f"({worst.cost_factor:g}x its size)"
        )
        lower = [rule.limit_name, *held]
    raise ConfigError(
        [
            f"configuration error: {what} in flight, more than this worker's in-flight budget "
            f"of {fmt_mb(inflight_bytes)}: lower {', '.join(lower)} or WEB_CONCURRENCY, or raise "
            "MEMORY_LIMIT_MB"
        ]
    )
