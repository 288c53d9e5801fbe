"""The user's own service, started by the verifier: a server command, or an image.

Everything else is the verifier's as for this service: the free loopback port, the health wait,
the process-tree samples, the memory cgroup, the spike and the verdict. What the verifier gives
the service is in its environment: PORT (also put in the command for ``{port}``), ADMIN_TOKEN
(the token the verifier reads the status route with, e.g.
``memory.install(app, status_token=os.environ["ADMIN_TOKEN"])``) and the preset's settings
(MEMORY_CLEANUP_INTERVAL, CACHE_TTL_SECONDS), which a service reads if it wants the preset's
cadence; the verifier reads the interval the service really runs with from its status route.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.container import CONTAINER_PORT, ContainerService
from scripts.verify.core.docker_engine import Engine
from scripts.verify.core.local import LocalServer
from scripts.verify.core.served import HEALTH_PATH, STATUS_PATH

OWN_COMMAND = "own command"  # the profile column of a command's run: its allocator is its own
OWN_IMAGE = "own image"
# What makes a command line need a shell: operators, expansions, redirections, an assignment.
SHELL_SYNTAX = set("|&;<>()$`*?~\n")


def command_argv(command: str) -> list[str]:
    """The command's argv: split as a shell would when it is one simple command (so the server
    is the verifier's child and the tree sampled is the server's), else run by /bin/sh."""
    words = shlex.split(command)
    if SHELL_SYNTAX.isdisjoint(command) and words and "=" not in words[0]:
        return words
    return ["/bin/sh", "-c", command]


class CommandServer(LocalServer):
    """The user's server command, run from the caller's folder with the caller's environment."""

    kind = "command"
    signal_group = True  # a shell or a supervisor in between: the whole group gets SIGTERM

    def __init__(
        self,
        command: str,
        log_path: Path,
        cleanup_interval_seconds: float,
        cache_ttl_seconds: float,
        limit_mb: float,
        cgroup: MemoryCgroup | None = None,
        overrides: dict[str, str] | None = None,
        health_path: str = HEALTH_PATH,
        status_path: str = STATUS_PATH,
        token: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        super().__init__(
            OWN_COMMAND,
            workdir or Path.cwd(),
            log_path,
            cleanup_interval_seconds,
            cache_ttl_seconds,
            limit_mb,
            cgroup=cgroup,
            overrides=overrides,
        )
        self.health_path = health_path
        self.status_path = status_path
        self.token = token or self.token
        self.command_line = command.replace("{port}", str(self.port))

    def command(self) -> list[str]:
        return command_argv(self.command_line)

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "ADMIN_TOKEN": self.token,
            "PYTHONUNBUFFERED": "1",
            **self.preset_settings(),
        }
        if self.cgroup is None:
            env["MEMORY_LIMIT_MB"] = f"{self.limit_mb:g}"
        env.update(self.overrides)
        return env


class ImageService(ContainerService):
    """The user's image under ``docker run --memory``: it listens on PORT (set to the container
    port), as Railway and most platforms tell a service."""

    def __init__(
        self,
        engine: Engine,
        image: str,
        log_path: Path,
        cleanup_interval_seconds: float,
        cache_ttl_seconds: float,
        limit_mb: float,
        overrides: dict[str, str] | None = None,
        health_path: str = HEALTH_PATH,
        status_path: str = STATUS_PATH,
        token: str | None = None,
    ) -> None:
        super().__init__(
            engine, image, OWN_IMAGE, log_path, cleanup_interval_seconds, cache_ttl_seconds,
            limit_mb, overrides,
        )  # fmt: skip
        self.health_path = health_path
        self.status_path = status_path
        self.token = token or self.token

    def settings(self) -> dict[str, str]:
        return {
            "PORT": str(CONTAINER_PORT),
            "ADMIN_TOKEN": self.token,
            **self.preset_settings(),
            **self.overrides,
        }
