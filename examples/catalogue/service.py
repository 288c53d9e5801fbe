"""A catalogue service that lifted app/memory (`cp -r app/memory examples/catalogue/memory`):
many small Python objects behind a database driver.

Why it is here: the reference workload and examples/lifted are not what most services are. This
one is: every request reads rows through a pool of connections (SQLite here, a driver's pool in
production) and turns each into a dict, so a page of products is thousands of small objects made
and dropped at once, and a bounded cache keeps them a while (lru.py). Small objects live in
pymalloc's 1 MiB arenas under glibc, and an arena goes back only when every object in it is dead;
the verifier shows how much of such a spike each allocator profile gives back (docs/examples.md).
"""

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import store
from fastapi import FastAPI, HTTPException, Query
from lru import LRU
from memory import MB, CleanupConfig, MemoryManager

PRODUCTS = int(os.environ.get("CATALOGUE_PRODUCTS", "100000"))
POOL_SIZE = int(os.environ.get("CATALOGUE_POOL_SIZE", "4"))
CACHE_ENTRIES = int(os.environ.get("CATALOGUE_CACHE_ENTRIES", "50000"))
CACHE_TTL_SECONDS = float(os.environ.get("CACHE_TTL_SECONDS", "300"))

# Read through: every product a route reads is kept here, the page routes' included.
hot: LRU[int, store.Product] = LRU(CACHE_ENTRIES, CACHE_TTL_SECONDS)
pools: list[store.Pool] = []  # the one pool, once the lifespan has opened it


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """The database is written before the first request (CATALOGUE_DATABASE names a file to keep;
    unset, a temporary one), and the pool is opened once, as a service connects at start."""
    with tempfile.TemporaryDirectory(prefix="catalogue-") as scratch:
        path = Path(os.environ.get("CATALOGUE_DATABASE") or Path(scratch) / "catalogue.db")
        store.seed(path, PRODUCTS)
        pools.append(store.Pool(path, POOL_SIZE))
        try:
            yield
        finally:
            pools.pop().close()


app = FastAPI(lifespan=lifespan)
cleanup = CleanupConfig.from_env(threshold_bytes=32 * MB)  # the verifier's preset sets the interval
memory = MemoryManager(
    cleanup, limit_bytes=500 * MB, quiet_paths={"/healthz"}, namespace="catalogue"
)
memory.add_cleanup_hook(hot.purge, hot.expires_at)
memory.add_status_source("catalogue", lambda: {"products": PRODUCTS, "cached": len(hot)})
memory.install(app, status_token=os.environ["ADMIN_TOKEN"])


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/products")
def products(
    category: int = Query(0, ge=0, lt=store.CATEGORIES),
    offset: int = Query(0, ge=0),
    limit: int = Query(500, ge=1, le=2000),
) -> dict[str, Any]:
    """A page of a category: up to 2,000 rows as dicts, kept in the hot cache, sent as JSON."""
    items = store.page(pools[0], category, offset, limit)
    for item in items:
        hot.put(item["id"], item)
    return {"category": category, "offset": offset, "count": len(items), "items": items}


@app.get("/products/{product_id}")
def product(product_id: int) -> store.Product:
    """One product, from the hot cache when it holds it."""
    found = hot.get(product_id)
    if found is None:
        found = store.one(pools[0], product_id)
        if found is None:
            raise HTTPException(404, "no such product")
        hot.put(product_id, found)
    return found


@app.get("/categories/{category}/summary")
def summary(category: int) -> dict[str, Any]:
    """Stock and mean price per colour over a whole category: every row read into a dict and
    summed in Python, as a report over an ORM's objects is."""
    if not 0 <= category < store.CATEGORIES:
        raise HTTPException(404, "no such category")
    rows = store.page(pools[0], category, 0, PRODUCTS)
    for row in rows:
        hot.put(row["id"], row)
    colours: dict[str, dict[str, int]] = {}
    for row in rows:
        totals = colours.setdefault(row["colour"], {"products": 0, "stock": 0, "price_cents": 0})
        totals["products"] += 1
        totals["stock"] += row["stock"]
        totals["price_cents"] += row["price_cents"]
    return {
        "category": category,
        "products": len(rows),
        "colours": {
            colour: {"products": t["products"], "stock": t["stock"],
                     "mean_price_cents": t["price_cents"] // t["products"]}
            for colour, t in sorted(colours.items())
        },
    }  # fmt: skip
