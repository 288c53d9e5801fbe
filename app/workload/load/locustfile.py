"""The reference workload's clients: `make load`, or under the spike shape by hand,

    locust -f app/workload/load/locustfile.py,loadtest/shape.py --headless \
        --host http://127.0.0.1:8000 --csv results/run

Each user submits bulk orders of varied sizes (mostly small, now and then the maximum) to both
the sync and the async path, reads back results it created, looks up products and checks health,
with think time between requests. No shape here: the workload declares this file
(app/workload/load/__init__.py) and the verifier runs it beside loadtest/shape.py, whose
--spike-* arguments or SPIKE_* variables size and time the spike, as it runs anyone's users;
--bulk-sizes and --think-time shape the traffic.
"""

from __future__ import annotations

import random
import time

from locust import FastHttpUser, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastResponse
from locust.env import Environment

from app.workload.load import SUBMIT_PATHS
from app.workload.load.payloads import (
    DEFAULT_SIZES,
    DEFAULT_THINK,
    KNOWN_SKUS,
    PayloadBank,
    parse_buckets,
    parse_think,
)
from app.workload.load.results import READ_NAME, KeptResults
from app.workload.settings import BulkSettings

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
KEPT_RESULTS = 16  # ids a client remembers to read back; older ones it forgets, as real ones do
UNKNOWN_PRODUCT_SHARE = 0.1
SERVICE_TTL_SECONDS = float(BulkSettings.model_fields["cache_ttl_seconds"].default)

_bank = PayloadBank(parse_buckets(DEFAULT_SIZES))
_ttl_seconds = SERVICE_TTL_SECONDS


# locust's event hooks are not typed.
@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_arguments(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("traffic", "the bulk workload's requests (payloads.py)")
    group.add_argument(
        "--bulk-sizes",
        env_var="BULK_SIZES",
        default=DEFAULT_SIZES,
        help=f"records per bulk submit and their weights (default {DEFAULT_SIZES})",
    )
    group.add_argument(
        "--think-time",
        env_var="THINK_SECONDS",
        default=DEFAULT_THINK,
        help=f"min,max seconds a user waits between requests (default {DEFAULT_THINK})",
    )
    group.add_argument(
        "--cache-ttl",
        type=float,
        env_var="CACHE_TTL_SECONDS",
        default=SERVICE_TTL_SECONDS,
        help="seconds the service keeps a result: a 404 for a younger one that names no reason "
        f"(expired, evicted) counts as lost (default {SERVICE_TTL_SECONDS:g}, the service's)",
    )


@events.init.add_listener  # type: ignore[untyped-decorator]  # not typed, as above
def _configure(environment: Environment, **_kwargs: object) -> None:
    """Apply the traffic options and build every body before the first user starts."""
    global _bank, _ttl_seconds
    options = environment.parsed_options
    if options is not None:
        _bank = PayloadBank(parse_buckets(options.bulk_sizes))
        _ttl_seconds = options.cache_ttl
        ServiceClient.wait_time = between(*parse_think(options.think_time))
    _bank.warm()


def _detail(response: FastResponse) -> str:
    """The reason in a JSON error reply, or "" if it has none."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""


class ServiceClient(FastHttpUser):
    """A client system: submits orders, reads back its own results, browses products."""

    host = "http://127.0.0.1:8000"
    wait_time = between(*parse_think(DEFAULT_THINK))
    network_timeout = 90.0  # a 20,000-record submit queued behind others can take a while

    def on_start(self) -> None:
        self.rng = random.Random()
        self.results = KeptResults(KEPT_RESULTS, _ttl_seconds)

    def _submit(self, path: str) -> None:
        records, data = _bank.pick(self.rng)
        with self.client.post(
            # The body is bytes made before the load, sent as they are; locust's annotation
            # names only str and dict.
            path, data=data, headers=JSON_HEADERS, name=path, catch_response=True  # type: ignore[arg-type]
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code} for {records} records")
                return
            try:
                self.results.add(response.json()["id"], time.monotonic())
            except (ValueError, KeyError, TypeError):
                response.failure("201 without an id")

    @task(3)
    def submit_sync(self) -> None:
        self._submit(SUBMIT_PATHS[0])

    @task(3)
    def submit_async(self) -> None:
        self._submit(SUBMIT_PATHS[1])

    @task(4)
    def read_result(self) -> None:
        if not self.results:
            self.health()
            return
        submission = self.results.pick(self.rng)
        with self.client.get(
            f"/bulk/{submission}", name=READ_NAME, catch_response=True
        ) as response:
            if response.status_code == 404:
                # Not a failure: the cache is bounded by age and size. Counted apart under its
                # own name: expired, evicted, or lost (neither, while inside the TTL).
                response.request_meta["name"] = self.results.gone(
                    submission, time.monotonic(), _detail(response)
                )
                response.success()
            elif response.status_code != 200:
                response.failure(f"{response.status_code}")

    @task(4)
    def read_product(self) -> None:
        unknown = self.rng.random() < UNKNOWN_PRODUCT_SHARE
        number = (
            self.rng.randrange(KNOWN_SKUS, 100_000) if unknown else self.rng.randrange(KNOWN_SKUS)
        )
        expected = 404 if unknown else 200
        with self.client.get(
            f"/products/SKU-{number:05d}", name="/products/[sku]", catch_response=True
        ) as response:
            if response.status_code == expected:
                response.success()
            else:
                response.failure(f"{response.status_code}, expected {expected}")

    @task(1)
    def health(self) -> None:
        with self.client.get("/healthz", name="/healthz", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
