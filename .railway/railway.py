"""Railway infrastructure as code for this service: `railway config plan`, `railway config apply`.

The Railway CLI evaluates this file with whatever `python3` is first on PATH, from whatever
directory it was started in (the repository root, `.railway/`, or anywhere with `--file`): it
imports the file and calls `main`, with a context (project, environment, command; also in
RAILWAY_IAC_CONTEXT as JSON) when `main` takes a parameter, as current CLIs do, or with none, as
older ones do; it evaluates the file once per persistent environment and sends each graph to
Railway. So the file imports nothing outside the standard library, finds the repository from
its own location, returns the same graph in every environment (a resource missing from one
environment is an error to the CLI), and returns it in the form Railway's SDKs emit (`deploy`,
`variables`), because the CLI itself only rewrites `start` and a string `build` into that form
and silently drops other shorthand keys.

Infrastructure as Code is marked experimental by Railway. It replaces Config as Code
(railway.toml), which Railway's docs say stops being read on 2026-12-01; this repository keeps
its old Config as Code files out of the way, in railway/legacy/ (docs/railway.md).

Results live in a Railway Postgres database (DATABASE below): the web service gets its
DATABASE_URL as a reference, `${{Postgres.DATABASE_URL}}`, so every replica reads what any
replica stored, and a redeploy keeps it. DATABASE = None leaves the service on its SQLite file:
one replica, and a volume mounted for the file if results are to outlive a redeploy
(docs/railway.md).

The allocator profile is chosen by PROFILE below, and nowhere else; it must name a deployable
profile in profiles/profiles.toml, and evaluating this file fails with one line if it does not.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The allocator profile every replica runs (MEMORY_PROFILE). One of: glibc, glibc-tuned,
# jemalloc, jemalloc-nopymalloc (see profiles/profiles.toml; `baseline` is not deployable).
PROFILE = "jemalloc-nopymalloc"

SERVICE = "web"
PROJECT = "lean-memory-service"  # the CLI diffs resources only; the name is informational
REPLICAS = 1
HEALTHCHECK_PATH = "/healthz"
HEALTHCHECK_TIMEOUT_SECONDS = 60
RESTART_MAX_RETRIES = 5  # a configuration error exits 2; stop restarting after a few tries

# uvicorn gets SHUTDOWN_GRACE_SECONDS to finish requests after SIGTERM; Railway sends SIGKILL
# DRAINING_SECONDS after SIGTERM, so draining must be longer than the grace.
SHUTDOWN_GRACE_SECONDS = 10
DRAINING_SECONDS = SHUTDOWN_GRACE_SECONDS + 5

# Memory limit of each replica in MB (Settings > Deploy > Replica Limits in the dashboard).
# None leaves the plan's limit; the service reads whatever limit applies from its cgroup.
REPLICA_MEMORY_LIMIT_MB: int | None = None

# "owner/name" of the GitHub repository the service deploys from. None manages the service
# settings only: connect the repository in the dashboard, or deploy with `railway up`.
GITHUB_REPO: str | None = None
GITHUB_BRANCH = "main"

# The memory manager's settings (app/config.py). Only MEMORY_PROFILE is needed: the launcher
# applies the profile's own variables (LD_PRELOAD, MALLOC_CONF, ...) itself.
CLEANUP_ENV = {
    "MEMORY_CLEANUP": "1",
    "MEMORY_CLEANUP_INTERVAL": "60",
    "MEMORY_CLEANUP_THRESHOLD_MB": "100",
    "MEMORY_IDLE_RELEASE_SECONDS": "5",
}

# The Railway Postgres database the results go to (its name is the reference's prefix), or None
# for the service's SQLite file. The image is the one Railway's own Postgres template runs.
DATABASE: str | None = "Postgres"
POSTGRES_IMAGE = "ghcr.io/railwayapp-templates/postgres-ssl:18"

# Variables set in the dashboard that this file must keep rather than delete on apply.
PRESERVED = ("ADMIN_TOKEN", "MEMORY_LIMIT_MB")

LAUNCH_COMMAND = "python -m app.launch"  # the image's CMD; exec form, so no $VARIABLES
REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def deployable_profiles(repo_root: Path = REPO_ROOT) -> list[str]:
    """Profile names from profiles/profiles.toml, read through app/profiles.py by file path.

    Loaded by path rather than imported, because the CLI's working directory is not always the
    repository root, and app/__init__.py must not pull in the service's dependencies here.
    """
    path = repo_root / "app" / "profiles.py"
    name = "_railway_iac_profiles"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"railway.py: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == "tomllib":
            raise SystemExit(
                f"railway.py needs python3 >= 3.11 (tomllib); `python3` here is "
                f"{sys.version.split()[0]}: activate the project's .venv first"
            ) from None
        raise
    finally:
        sys.modules.pop(name, None)
    profiles = module.load_profiles(repo_root / "profiles" / "profiles.toml")
    return [p.name for p in profiles.profiles.values() if p.deploy]


def check_profile(profile: str, allowed: list[str]) -> None:
    """Fail the evaluation (and so the plan) with one line naming the allowed profiles."""
    if profile not in allowed:
        raise SystemExit(
            f"railway.py: PROFILE={profile!r} is not a deployable profile; "
            f"allowed: {', '.join(allowed)}"
        )


def database_graph(name: str) -> dict[str, Any]:
    """A Railway Postgres database node, in the shape the SDKs' `postgres(name)` emit (railwayapp/
    cli, src/iac/tests.rs); Railway provisions its volume and its variables itself."""
    return {
        "address": f"database.{name}",
        "type": "database",
        "kind": "database",
        "engine": "postgres",
        "name": name,
        "image": POSTGRES_IMAGE,
        "output": "DATABASE_URL",
        "defaultMountPath": "/var/lib/postgresql/data",
        "source": {"type": "image", "image": POSTGRES_IMAGE},
    }


def service_graph(
    profile: str = PROFILE,
    *,
    replicas: int = REPLICAS,
    memory_limit_mb: int | None = REPLICA_MEMORY_LIMIT_MB,
    github_repo: str | None = GITHUB_REPO,
    database: str | None = DATABASE,
) -> dict[str, Any]:
    """The `web` service node, in the shape `railway_sdk.service()` / `railway/iac` emit."""
    deploy: dict[str, Any] = {
        "restartPolicyType": "ON_FAILURE",
        "restartPolicyMaxRetries": RESTART_MAX_RETRIES,
        "drainingSeconds": DRAINING_SECONDS,
        "startCommand": LAUNCH_COMMAND,
        "healthcheckPath": HEALTHCHECK_PATH,
        "healthcheckTimeout": HEALTHCHECK_TIMEOUT_SECONDS,
        "numReplicas": replicas,
    }
    if memory_limit_mb is not None:
        deploy["limitOverride"] = {"containers": {"memoryBytes": memory_limit_mb * MB}}
    env = {
        "MEMORY_PROFILE": profile,
        **CLEANUP_ENV,
        "SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS),
    }
    variables: dict[str, Any] = {k: {"type": "literal", "value": v} for k, v in env.items()}
    if database is not None:
        # Compiled by the CLI to ${{<database>.DATABASE_URL}}: the database's own variable.
        variables["DATABASE_URL"] = {
            "type": "reference",
            "resource": f"database.{database}",
            "output": "DATABASE_URL",
        }
    variables.update({k: {"type": "preserve"} for k in PRESERVED})
    node: dict[str, Any] = {
        "address": f"service.{SERVICE}",
        "type": "service",
        "kind": "github" if github_repo else "empty",
        "name": SERVICE,
    }
    if github_repo:
        node["source"] = {"type": "github", "repo": github_repo, "branch": GITHUB_BRANCH}
    # DOCKERFILE is gone from the public GraphQL Builder enum, but it is still the value of the
    # environment config this graph becomes: the CLI writes it there itself (`railway environment
    # edit`) and its IaC diff treats {"builder": "DOCKERFILE"} as a service built from
    # /Dockerfile (railwayapp/cli 5.43, src/iac/tests.rs). Railway builds a root Dockerfile
    # whenever one exists, so this only says so explicitly.
    node["build"] = {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    node["deploy"] = deploy
    node["variables"] = variables
    return node


def main(ctx: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The project graph; the CLI's context (environment, command) changes nothing in it.

    One service and its database, configured alike in production, staging and PR environments:
    the figures the memory manager is tuned for are the same everywhere, and the CLI refuses a
    resource that only some environments have.
    """
    del ctx  # accepted so current CLIs pass it; unused on purpose
    check_profile(PROFILE, deployable_profiles())
    databases = [database_graph(DATABASE)] if DATABASE is not None else []
    return {"name": PROJECT, "resources": [service_graph(), *databases]}
