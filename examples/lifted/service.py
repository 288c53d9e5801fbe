"""A service that lifted app/memory (`cp -r app/memory examples/lifted/memory`): its own routes,
no /bulk, and the memory package's status route for the verifier (docs/lift-out.md)."""

import os

from fastapi import FastAPI
from memory import MB, CleanupConfig, MemoryManager

app = FastAPI()
cleanup = CleanupConfig.from_env(threshold_bytes=32 * MB)  # the verifier's preset sets the interval
memory = MemoryManager(cleanup, limit_bytes=500 * MB, quiet_paths={"/healthz"}, namespace="lifted")
memory.install(app, status_token=os.environ["ADMIN_TOKEN"])


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/report")
def report(rows: int = 20_000) -> dict[str, int]:
    """A large short-lived result, as a report or an export builds one: the heap grows with the
    requests in flight, and is given back once they are gone."""
    table = [{"row": i, "label": f"item-{i:06d}", "tags": ["a", "b"]} for i in range(rows)]
    return {"rows": len(table), "labels": sum(len(r["label"]) for r in table)}
