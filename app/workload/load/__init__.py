"""The reference workload's load, declared for the verifier (app/load.py): its Locust users and
its heavy requests. They move with the workload: delete app/workload and the verifier no longer
drives /bulk, it asks for your users.

The spike's options are heavier than the users' everyday defaults (shorter think time, more of
the largest bodies, still mostly small ones); the warm-up sends the smallest bodies only, so
what the service caches of it is small beside what the spike adds. The floods send the most
records a submission takes (MAX_BULK_RECORDS), each with a long note: ~7.7 MB, under
MAX_BODY_MB.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from app.load import BodyShape, HeavyRequest, LocustUsers, WorkloadLoad
from app.workload.load.payloads import make_record
from app.workload.load.results import LOST_NAME, READBACK_NAMES

SUBMIT_PATHS = ("/bulk/sync", "/bulk/async")  # also the Locust names of the submits
SPIKE_THINK = "0.1,0.5"
SPIKE_SIZES = "200:40,1000:25,5000:20,20000:15"
WARMUP_SIZES = "200:1"
LARGEST = BodyShape(20_000, 300)


@lru_cache(maxsize=8)
def heavy_body(shape: BodyShape) -> bytes:
    """A valid submission of ``shape``: the load test's records, each note replaced by
    ``note_chars`` characters where given; deterministic per shape, built once per process."""
    rng = random.Random(shape.records * 31 + shape.note_chars)
    rows = []
    for _ in range(shape.records):
        row = make_record(rng)
        if shape.note_chars:
            row["note"] = "x" * shape.note_chars
        rows.append(row)
    return json.dumps({"records": rows}, separators=(",", ":")).encode()


USERS = LocustUsers(
    file=Path(__file__).with_name("locustfile.py"),
    about="bulk submits, read-backs, products",
    spike_options=("--think-time", SPIKE_THINK, "--bulk-sizes", SPIKE_SIZES),
    warmup_options=("--think-time", SPIKE_THINK, "--bulk-sizes", WARMUP_SIZES),
    ttl_option="--cache-ttl",
    heavy_names=SUBMIT_PATHS,
    readback_names=READBACK_NAMES,
    lost_name=LOST_NAME,
)
# Sync first: `--body-cost` measures the first declared. A sync result is read back at the same
# path; the slow readers need one request that stores, and have always read what async stored.
HEAVY = (
    HeavyRequest("/bulk/sync", heavy_body, LARGEST),
    HeavyRequest("/bulk/async", heavy_body, LARGEST, result_path="/bulk/{id}"),
)
LOAD = WorkloadLoad(USERS, HEAVY)
