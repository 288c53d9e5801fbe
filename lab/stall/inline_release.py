"""For contrast only: the service plus one route that releases ON the event loop, as the seed
guide's cleanup did (gc.collect() and malloc_trim(0) called straight from async code).

Never deployed. The stall benchmark starts it on loopback, under the same allocator profile and
settings as the service, to show the stall the service's worker-thread release avoids:
`python -m lab.stall.inline_release` is the launcher (`app.launch`) with this module's
factory in place of `app.main:create_app`, and nothing else changed.
"""

from __future__ import annotations

import sys

from fastapi import Depends, FastAPI, Request

from app import launch, main
from app.diagnostics import require_admin
from app.frame import frame_of
from app.memory.manager import MemoryManager
from scripts.verify.core.local import LocalServer

SERVICE_FACTORY = "app.main:create_app"
HARNESS_FACTORY = "lab.stall.inline_release:create_app"
INLINE_RELEASE_PATH = "/stall/release-inline"


def create_app() -> FastAPI:
    """The service's own app, with the inline release route added (admin token required)."""
    service = main.create_app()

    @service.post(INLINE_RELEASE_PATH, dependencies=[Depends(require_admin)])
    async def release_inline(request: Request) -> dict[str, object]:
        """gc.collect() and the allocator's release on the event loop: the seed's way."""
        memory: MemoryManager = frame_of(request).memory
        result = memory.releaser.release("inline")  # blocks the loop for the whole release
        assert result is not None  # a waiting release always runs
        return result.as_dict()

    return service


class InlineReleaseServer(LocalServer):
    """LocalServer, started through this module instead of `app.launch`."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", __name__]


def with_harness(argv: list[str]) -> list[str]:
    """The launcher's command line with the harness factory in place of the service's."""
    if SERVICE_FACTORY not in argv:
        raise SystemExit(f"the launcher no longer starts {SERVICE_FACTORY}: {argv}")
    return [HARNESS_FACTORY if arg == SERVICE_FACTORY else arg for arg in argv]


if __name__ == "__main__":
    launch.launch(with_harness)
