"""Where the service under test comes from: this service started here (optionally in a cgroup or a
container), the user's own command or image, or a deployed service read through its status
route."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from app.memory.document import StatusDocument, added
from scripts.verify.core import container
from scripts.verify.core.cgroup_limit import MemoryCgroup, record_of
from scripts.verify.core.container import ContainerService
from scripts.verify.core.docker_engine import Engine
from scripts.verify.core.local import LocalServer
from scripts.verify.core.own_service import CommandServer, ImageService
from scripts.verify.core.progress import Progress
from scripts.verify.core.remote import RemoteService
from scripts.verify.core.run import RunResult, RunSettings, Target, execute
from scripts.verify.core.served import HEALTH_PATH, STATUS_PATH, Served

LIMIT_MODES = ("none", "cgroup", "docker")
# What is done with the started service: the verifier's one spike (run.execute) by default; the
# soak passes one that repeats it (scripts.verify.soak.run).
Executor = Callable[[Target, RunSettings, dict[str, Any], Progress], RunResult]
# Extra idle time past two of the service's own cleanup intervals: a release takes a moment.
IDLE_MARGIN_SECONDS = 10.0


def service_summary(document: StatusDocument | None) -> dict[str, Any] | None:
    """What the service says about itself, kept in the timeline to show what was measured."""
    if not document:
        return None
    cgroup = document["cgroup"]
    return {
        "profile": added(document, "profile"),  # this service adds it; another may not
        "python": document["interpreter"]["version"],
        "allocator": document["allocator"]["name"],
        "release_method": document["allocator"]["release_method"],
        "limit_mb": document["limit_mb"],
        "cgroup_limit_bytes": cgroup["limit_bytes"] if cgroup else None,
        "releases": len(document["releases"]),
        "cleanup": dict(document["cleanup"]),
        "cache": added(document, "cache"),
    }


def meta_of(
    served: Served,
    settings: RunSettings,
    limit_mode: str,
    web_concurrency: int | str,
    document: StatusDocument | None,
) -> dict[str, Any]:
    """What the timeline records of a service started here, before the load."""
    return {
        "mode": "local",
        "profile": served.profile,
        "limit_mode": limit_mode,
        "cleanup_interval_seconds": settings.preset.cleanup_interval_seconds,
        "cache_ttl_seconds": settings.preset.cache_ttl_seconds,
        "web_concurrency": web_concurrency,
        "overrides": dict(served.overrides),
        "service_at_start": service_summary(document),
        **({"image": served.image} if isinstance(served, ContainerService) else {}),
    }


class Given(TypedDict):
    """What every service the verifier starts is given by the run: where it logs, the preset's
    cleanup interval and cache TTL, and the limit it is judged against."""

    log_path: Path
    cleanup_interval_seconds: float
    cache_ttl_seconds: float
    limit_mb: float


def given(settings: RunSettings) -> Given:
    return Given(
        log_path=settings.out_dir / "server.log",
        cleanup_interval_seconds=settings.preset.cleanup_interval_seconds,
        cache_ttl_seconds=settings.preset.cache_ttl_seconds,
        limit_mb=settings.criteria.limit_mb,
    )


def fit_idle(settings: RunSettings, document: StatusDocument | None) -> RunSettings:
    """``settings`` with an idle window of two of the service's own cleanup intervals (plus a
    margin) where its status route says it runs a longer one than the preset assumed: a
    service that does not read the preset's MEMORY_CLEANUP_INTERVAL keeps its own."""
    interval = float(document["cleanup"]["interval_seconds"]) if document else 0.0
    plan = settings.preset.plan
    needed = 2 * interval + IDLE_MARGIN_SECONDS
    if not interval or plan.idle_seconds >= needed:
        return settings
    preset = replace(settings.preset, plan=plan.with_overrides(idle_seconds=needed))
    return replace(settings, preset=preset)


def release_seconds(document: StatusDocument | None, started_unix: float) -> list[float]:
    """When each release the status route lists ran, in seconds of the run (for the plot)."""
    times = [r.get("started_at") for r in (document["releases"] if document else [])]
    return [
        round(t - started_unix, 1)
        for t in times
        if isinstance(t, int | float) and t >= started_unix
    ]


def preset_note(settings: RunSettings, served: Served, document: StatusDocument | None) -> str:
    """The console line that says what the preset changed on the service, and what it runs."""
    given = ", ".join(f"{k}={v}" for k, v in served.preset_settings().items())
    runs = document["cleanup"]["interval_seconds"] if document else None
    said = (
        f"; its status route says a {float(runs):g} s cleanup interval" if runs is not None
        else "; no status route read, so its own interval is not known"
    )
    return (
        f"preset {settings.preset.name} sets {given} (seconds) on the service{said}; "
        f"idle window {settings.preset.plan.idle_seconds:g} s"
    )


def spike_started(
    served: LocalServer | ContainerService,
    settings: RunSettings,
    limit_mode: str,
    workers: int | str,
    progress: Progress,
    executor: Executor,
) -> RunResult:
    """From a started service to its result, whatever started it: healthy, its status read
    (its own cleanup interval fits the idle window), the spike, its status read again."""
    served.wait_healthy(settings.preset.health_timeout_seconds)
    document = served.memory_status()
    settings = fit_idle(settings, document)
    progress.note(preset_note(settings, served, document))
    meta = meta_of(served, settings, limit_mode, workers, document)
    result = executor(served, settings, meta, progress)
    end = served.memory_status()
    meta = result.timeline.meta  # what the executor recorded, with the end added
    meta["service_at_end"] = service_summary(end)
    meta["release_seconds"] = release_seconds(end, float(meta.get("started_at_unix") or 0))
    return result


def run_served(
    server: LocalServer,
    settings: RunSettings,
    limit_mode: str,
    web_concurrency: int | str,
    progress: Progress | None = None,
    executor: Executor = execute,
) -> RunResult:
    """Start ``server`` (ours or the user's command), run the spike against it, stop it."""
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    cgroup = server.cgroup
    try:
        server.start()
        progress.note(f"starting the service ({server.profile}) on {server.base_url}")
        result = spike_started(server, settings, limit_mode, web_concurrency, progress, executor)
        result.timeline.meta["release_log_lines"] = server.release_lines()
        if cgroup is not None:
            result.timeline.meta["cgroup"] = record_of(cgroup, "host")
        return result
    finally:
        server.stop()
        if cgroup is not None:
            cgroup.remove()


def run_local(
    profile: str,
    settings: RunSettings,
    limit_mode: str = "none",
    web_concurrency: int = 1,
    progress: Progress | None = None,
    overrides: dict[str, str] | None = None,
    executor: Executor = execute,
) -> RunResult:
    """Start the service under ``profile``, run the spike against it, stop it, clean up.

    ``overrides`` are service settings (NAME=value) applied last, over the preset's."""
    if limit_mode == "docker":
        if web_concurrency != 1:
            overrides = {"WEB_CONCURRENCY": str(web_concurrency), **(overrides or {})}
        return run_docker(profile, settings, progress, overrides, executor)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lean-memory-verify-"))
    cgroup = MemoryCgroup(settings.criteria.limit_mb).create() if limit_mode == "cgroup" else None
    server = LocalServer(
        profile=profile,
        workdir=workdir,
        **given(settings),
        cgroup=cgroup,
        web_concurrency=web_concurrency,
        overrides=overrides,
    )
    try:
        return run_served(server, settings, limit_mode, web_concurrency, progress, executor)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class OwnService:
    """The user's own service: a server command or an image, its health path and status route."""

    command: str | None = None
    image: str | None = None
    health_path: str = HEALTH_PATH
    status_path: str = STATUS_PATH
    token: str | None = None  # the status route's token; default a random one, as ADMIN_TOKEN


def run_own(
    own: OwnService,
    settings: RunSettings,
    limit_mode: str = "none",
    progress: Progress | None = None,
    overrides: dict[str, str] | None = None,
) -> RunResult:
    """The user's command (here, optionally in a memory cgroup) or image (under docker
    --memory), through the same spike, samples and verdict as this service."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    if own.image is not None:
        return run_image(own, settings, progress, overrides)
    assert own.command is not None
    cgroup = MemoryCgroup(settings.criteria.limit_mb).create() if limit_mode == "cgroup" else None
    server = CommandServer(
        own.command,
        **given(settings),
        cgroup=cgroup,
        overrides=overrides,
        health_path=own.health_path,
        status_path=own.status_path,
        token=own.token,
    )
    result = run_served(server, settings, limit_mode, "its own", progress)
    result.timeline.meta["command"] = server.command_line
    return result


def run_remote(
    url: str,
    token: str,
    settings: RunSettings,
    probes_per_tick: int = 3,
    progress: Progress | None = None,
    status_path: str = STATUS_PATH,
    health_path: str = HEALTH_PATH,
) -> RunResult:
    """Run the spike against a deployed service and read its status route throughout."""
    remote = RemoteService(
        url, token, probes_per_tick, status_path=status_path, health_path=health_path
    )
    document = remote.check()
    settings = fit_idle(settings, document)
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    interval = float((document.get("cleanup") or {}).get("interval_seconds") or 0)
    progress.note(
        f"a deployed service keeps its own settings: its status route says a {interval:g} s "
        f"cleanup interval; idle window {settings.preset.plan.idle_seconds:g} s"
    )
    meta = {
        "mode": "remote",
        "url": remote.base_url,
        "probes_per_tick": probes_per_tick,
        "service_at_start": service_summary(document),
    }
    result = execute(remote, settings, meta, progress)
    result.timeline.meta["service_at_end"] = service_summary(remote.last_document)
    result.timeline.meta["release_seconds"] = release_seconds(
        remote.last_document, float(result.timeline.meta.get("started_at_unix") or 0)
    )
    return result


def run_docker(
    profile: str,
    settings: RunSettings,
    progress: Progress | None = None,
    overrides: dict[str, str] | None = None,
    executor: Executor = execute,
) -> RunResult:
    """The service image under `docker run --memory=<limit> --memory-swap=<limit>`; workers as
    WEB_CONCURRENCY in ``overrides`` says (the image's default is one)."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    workers = (overrides or {}).get("WEB_CONCURRENCY", "1")
    progress.note("preparing the Docker engine and building the service image")
    engine = container.prepare_engine(settings.out_dir / "docker-build.log")
    service = container.ContainerService(
        engine,
        container.image_tag(),
        profile,
        **given(settings),
        overrides=overrides,
    )
    workers_count = int(workers) if workers.isdigit() else workers
    return run_container(service, engine, settings, progress, executor, workers_count)


def run_image(
    own: OwnService,
    settings: RunSettings,
    progress: Progress | None = None,
    overrides: dict[str, str] | None = None,
) -> RunResult:
    """The user's image under `docker run --memory`: no build, the engine only."""
    assert own.image is not None
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    progress.note("preparing the Docker engine")
    service = ImageService(
        container.engine_only(),
        own.image,
        **given(settings),
        overrides=overrides,
        health_path=own.health_path,
        status_path=own.status_path,
        token=own.token,
    )
    return run_container(service, service.engine, settings, progress, execute, "its own")


def run_container(
    service: ContainerService,
    engine: Engine,
    settings: RunSettings,
    progress: Progress,
    executor: Executor,
    workers: int | str,
) -> RunResult:
    """Start the container, run the spike against it, keep its log, stop it and the engine."""
    try:
        service.start()
        progress.note(f"container {service.name} ({service.profile}) on {service.base_url}")
        result = spike_started(service, settings, "docker", workers, progress, executor)
        if service.cgroup is not None:
            result.timeline.meta["cgroup"] = record_of(service.cgroup, service.cgroup_where)
    finally:
        service.stop()
        engine.stop()
    result.timeline.meta["release_log_lines"] = service.release_lines()  # the log is kept at stop
    return result
