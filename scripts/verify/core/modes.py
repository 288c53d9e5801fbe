"""Where the service under test comes from: started here (optionally in a cgroup or a container),
or already deployed and read through /debug/memory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts.verify.core.cgroup_limit import MemoryCgroup, record_of
from scripts.verify.core.local import LocalServer
from scripts.verify.core.progress import Progress
from scripts.verify.core.remote import RemoteService
from scripts.verify.core.run import RunResult, RunSettings, Target, execute
from scripts.verify.core.served import Served

LIMIT_MODES = ("none", "cgroup", "docker")
# What is done with the started service: the verifier's one spike (run.execute) by default; the
# soak passes one that repeats it (scripts.verify.soak.run).
Executor = Callable[[Target, RunSettings, dict[str, Any], Progress], RunResult]
# Extra idle time past two of the deployed service's cleanup intervals: a release takes a moment.
REMOTE_IDLE_MARGIN_SECONDS = 10.0


def service_summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the service says about itself, kept in the timeline to show what was measured."""
    if not document:
        return None
    allocator = document.get("allocator") or {}
    cgroup = document.get("cgroup") or {}
    return {
        "profile": document.get("profile"),
        "allocator": allocator.get("name"),
        "release_method": allocator.get("release_method"),
        "limit_mb": document.get("limit_mb"),
        "cgroup_limit_bytes": cgroup.get("limit_bytes"),
        "releases": len(document.get("releases") or []),
        "cleanup": document.get("cleanup"),
        "cache": document.get("cache"),
    }


def meta_of(
    served: Served, settings: RunSettings, limit_mode: str, web_concurrency: int | str
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
        "service_at_start": service_summary(served.debug_memory()),
    }


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
        log_path=settings.out_dir / "server.log",
        cleanup_interval_seconds=settings.preset.cleanup_interval_seconds,
        cache_ttl_seconds=settings.preset.cache_ttl_seconds,
        limit_mb=settings.criteria.limit_mb,
        cgroup=cgroup,
        web_concurrency=web_concurrency,
        overrides=overrides,
    )
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    try:
        server.start()
        progress.note(f"starting the service (profile {profile}) on {server.base_url}")
        server.wait_healthy(settings.preset.health_timeout_seconds)
        meta = meta_of(server, settings, limit_mode, web_concurrency)
        result = executor(server, settings, meta, progress)
        result.timeline.meta["service_at_end"] = service_summary(server.debug_memory())
        result.timeline.meta["release_log_lines"] = server.release_lines()
        if cgroup is not None:
            result.timeline.meta["cgroup"] = record_of(cgroup, "host")
        return result
    finally:
        server.stop()
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def run_remote(
    url: str,
    token: str,
    settings: RunSettings,
    probes_per_tick: int = 3,
    progress: Progress | None = None,
) -> RunResult:
    """Run the spike against a deployed service and read its /debug/memory throughout."""
    remote = RemoteService(url, token, probes_per_tick)
    document = remote.check()
    interval = float((document.get("cleanup") or {}).get("interval_seconds") or 0)
    plan = settings.preset.plan
    needed = 2 * interval + REMOTE_IDLE_MARGIN_SECONDS
    if interval and plan.idle_seconds < needed:
        # Two of the service's own cleanup intervals, whatever the preset assumed.
        preset = replace(settings.preset, plan=plan.with_overrides(idle_seconds=needed))
        settings = replace(settings, preset=preset)
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    meta = {
        "mode": "remote",
        "url": remote.base_url,
        "probes_per_tick": probes_per_tick,
        "service_at_start": service_summary(document),
    }
    result = execute(remote, settings, meta, progress)
    result.timeline.meta["service_at_end"] = service_summary(remote.last_document)
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
    from scripts.verify.core import container

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(settings.label, settings.preset.expected_seconds)
    workers = (overrides or {}).get("WEB_CONCURRENCY", "1")
    progress.note("preparing the Docker engine and building the service image")
    engine = container.prepare_engine(settings.out_dir / "docker-build.log")
    service = container.ContainerService(
        engine,
        container.image_tag(),
        profile,
        log_path=settings.out_dir / "server.log",
        cleanup_interval_seconds=settings.preset.cleanup_interval_seconds,
        cache_ttl_seconds=settings.preset.cache_ttl_seconds,
        limit_mb=settings.criteria.limit_mb,
        overrides=overrides,
    )
    try:
        service.start()
        progress.note(f"container {service.name} (profile {profile}) on {service.base_url}")
        service.wait_healthy(settings.preset.health_timeout_seconds)
        workers_count = int(workers) if workers.isdigit() else workers
        meta = {**meta_of(service, settings, "docker", workers_count), "image": service.image}
        result = executor(service, settings, meta, progress)
        result.timeline.meta["service_at_end"] = service_summary(service.debug_memory())
        if service.cgroup is not None:
            result.timeline.meta["cgroup"] = record_of(service.cgroup, service.cgroup_where)
    finally:
        service.stop()
        engine.stop()
    result.timeline.meta["release_log_lines"] = service.release_lines()  # the log is kept at stop
    return result
