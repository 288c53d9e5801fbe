"""The HTTP API fuzzed on a real server: no 5xx, every answer as its OpenAPI schema declares,
and nothing stored for a request that is refused.

Schemathesis generates requests from the server's own /openapi.json, valid ones and ones that
break the schema; hypothesis drives the limits the schema cannot state (MAX_BULK_RECORDS,
MAX_BODY_MB) and the ways a body goes wrong. Seeds are fixed and the example database is off, so
the same tests send the same requests on every run (docs/reliability.md: what can still shift).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import Server

SEED = 20250101
FUZZ_EXAMPLES = 50  # per operation, generation mode and credential
LIMIT_EXAMPLES = 30  # per limit test
MAX_RECORDS = 10
MAX_BODY_BYTES = 64 * 1024
LIMITS = {"MAX_BULK_RECORDS": str(MAX_RECORDS), "MAX_BODY_MB": str(MAX_BODY_BYTES / 2**20)}
PATHS = ("/bulk/sync", "/bulk/async")
JSON = {"content-type": "application/json"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Invalid data must be refused; 413 (too many records) is a refusal the defaults do not list.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
            }
        }
    }
)
# Server-side failures the client never sees as a 5xx (raised after the response was sent).
CRASH_MARKERS = ("Traceback", "Exception in ASGI application")


def reproducible(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Fixed seed, no example database, no deadline (requests go over a socket)."""

    def wrap(test: Callable[..., None]) -> Callable[..., None]:
        configured = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        )(test)
        return seed(SEED)(configured)

    return wrap


def submission_count(database: Path) -> int:
    """Rows in `submissions`, read beside the running server (WAL lets readers in)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM submissions").fetchone()
    return int(count)


def crash_lines(server: Server) -> list[str]:
    return [line for line in server.log().splitlines() if line.startswith(CRASH_MARKERS)]


# ---------------------------------------------------------------------------------------------
# Schemathesis: the whole API from its schema


def credentials(server: Server, operation: schemathesis.APIOperation) -> dict[str, dict[str, str]]:
    """Admin routes with the right, a wrong and no token; the others as any client calls them."""
    if not operation.path.startswith(("/debug/", "/admin/")):
        return {"none": {}}
    return {
        "token": server.auth,
        "wrong-token": {"Authorization": "Bearer " + "0" * len(server.token)},
        "none": {},
    }


def generation_modes(operation: schemathesis.APIOperation) -> list[GenerationMode]:
    """Negative data needs something to break: a body or a path parameter."""
    if len(operation.body) or len(operation.path_parameters):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    headers: dict[str, str],
    statuses: Counter[int],
) -> None:
    @reproducible(FUZZ_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


def test_api_conforms_to_its_schema(
    server_factory: Callable[..., Server], record_property: Callable[[str, object], None]
) -> None:
    server = server_factory(MAX_BULK_RECORDS=str(MAX_RECORDS))
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    runs = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in generation_modes(operation):
            for who, headers in credentials(server, operation).items():
                runs += 1
                try:
                    fuzz_operation(operation, mode, headers, statuses)
                except (Exception, BaseExceptionGroup) as exc:  # checks raise a group
                    failures.append(f"{operation.label} [{mode.value}, {who}]: {exc}")
    examples = sum(statuses.values())
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    record_property("fuzz_runs", runs)
    record_property("fuzz_examples", examples)
    record_property("fuzz_statuses", dict(sorted(statuses.items())))
    record_property("fuzz_5xx", server_errors)
    assert not failures, "\n\n".join(failures)
    assert server_errors == 0
    # The fuzz reached every kind of answer, so the checks above looked at something. (The
    # admin routes are not in the schema; tests/app/test_security.py fuzzes their tokens.)
    assert {200, 201, 404, 422} <= set(statuses), statuses
    assert examples >= 300, statuses
    assert crash_lines(server) == []


# ---------------------------------------------------------------------------------------------
# Hypothesis: the limits and the broken bodies; nothing refused is ever stored

TEXT = st.characters(codec="utf-8")  # any code point JSON can carry (no lone surrogates)
SKU = st.integers(0, 5199).map(lambda i: f"SKU-{i:05d}")  # seeded and unknown products
RECORD = st.fixed_dictionaries(
    {
        "sku": SKU,
        "quantity": st.integers(1, 10_000),
        "unit_price": st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
        "customer": st.text(TEXT, min_size=1, max_size=64),
    },
    optional={
        "tags": st.lists(st.text(TEXT, max_size=32), max_size=8),
        "note": st.text(TEXT, max_size=512),
    },
)

# Small records, so that even 5 x MAX_BULK_RECORDS of them stay far under MAX_BODY_MB.
SMALL_RECORD = st.fixed_dictionaries(
    {
        "sku": SKU,
        "quantity": st.integers(1, 10_000),
        "unit_price": st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
        "customer": st.text(TEXT, min_size=1, max_size=8),
    }
)


def body(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"records": records}).encode()


@pytest.fixture
def limited(server_factory: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    """A server with small limits and one stored submission; afterwards: still serving, no row
    added by the refused requests, no server-side crash."""
    server = server_factory(**LIMITS)
    first = {"sku": "SKU-00001", "quantity": 1, "unit_price": 1.0, "customer": "c"}
    accepted = server.client.post(PATHS[0], content=body([first]), headers=JSON)
    assert accepted.status_code == 201, accepted.text
    database = tmp_path / "service.db"
    assert submission_count(database) == 1
    yield server
    assert submission_count(database) == 1, "a refused request stored a row"
    assert server.client.get("/healthz").status_code == 200
    assert crash_lines(server) == []


def refused(
    server: Server,
    path: str,
    content: bytes | Iterator[bytes],
    status: int,
    examples: Counter[str],
) -> dict:
    examples["sent"] += 1
    response = server.client.post(path, content=content, headers=JSON)
    assert response.status_code == status, response.text[:2000]
    detail: dict = response.json()
    return detail


def test_more_than_max_bulk_records_is_413(
    limited: Server, record_property: Callable[[str, object], None]
) -> None:
    examples = Counter[str]()

    @reproducible(LIMIT_EXAMPLES)
    @given(
        records=st.lists(SMALL_RECORD, min_size=1, max_size=3),
        count=st.integers(MAX_RECORDS + 1, 5 * MAX_RECORDS),
        path=st.sampled_from(PATHS),
    )
    def check(records: list[dict[str, Any]], count: int, path: str) -> None:
        many = [records[i % len(records)] for i in range(count)]
        assert "MAX_BULK_RECORDS" in refused(limited, path, body(many), 413, examples)["detail"]

    check()
    record_property("examples", examples["sent"])


def padded(size: int) -> bytes:
    """A valid request of exactly ``size`` bytes: trailing whitespace is still valid JSON."""
    valid = body([{"sku": "SKU-00002", "quantity": 2, "unit_price": 2.5, "customer": "c"}])
    return valid + b" " * (size - len(valid))


def in_chunks(data: bytes, size: int) -> Iterator[bytes]:
    """Sent without Content-Length (chunked): the server has to count as it reads."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_body_over_max_body_mb_is_413(
    limited: Server, record_property: Callable[[str, object], None]
) -> None:
    examples = Counter[str]()

    @reproducible(LIMIT_EXAMPLES)
    @given(
        excess=st.integers(1, 4 * MAX_BODY_BYTES),
        chunk=st.none() | st.integers(512, 32 * 1024),
        path=st.sampled_from(PATHS),
    )
    def check(excess: int, chunk: int | None, path: str) -> None:
        data = padded(MAX_BODY_BYTES + excess)
        content = data if chunk is None else in_chunks(data, chunk)
        assert "MAX_BODY_MB" in refused(limited, path, content, 413, examples)["detail"]

    check()
    record_property("examples", examples["sent"])


@st.composite
def overlong(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid record with one string (or list of strings) past its documented length."""
    record = dict(draw(RECORD))
    field = draw(st.sampled_from(["customer", "tag", "tags", "note", "empty-customer", "sku"]))
    if field == "customer":
        record["customer"] = draw(st.text(TEXT, min_size=65, max_size=200))
    elif field == "empty-customer":
        record["customer"] = ""
        field = "customer"
    elif field == "tag":
        tags = draw(st.lists(st.text(TEXT, max_size=32), max_size=7))
        tags.insert(draw(st.integers(0, len(tags))), draw(st.text(TEXT, min_size=33, max_size=99)))
        record["tags"] = tags
        field = "tags"
    elif field == "tags":
        record["tags"] = draw(st.lists(st.text(TEXT, max_size=32), min_size=9, max_size=30))
    elif field == "note":
        record["note"] = draw(st.text(TEXT, min_size=513, max_size=2000))
    else:
        digits = draw(st.integers(0, 12).filter(lambda n: n != 5))
        record["sku"] = "SKU-" + "7" * digits
    return field, record


def test_strings_past_their_length_are_422(
    limited: Server, record_property: Callable[[str, object], None]
) -> None:
    examples = Counter[str]()

    @reproducible(LIMIT_EXAMPLES)
    @given(bad=overlong(), others=st.lists(RECORD, max_size=3), path=st.sampled_from(PATHS))
    def check(bad: tuple[str, dict[str, Any]], others: list[dict[str, Any]], path: str) -> None:
        field, record = bad
        detail = refused(limited, path, body([*others, record]), 422, examples)["detail"]
        assert any(field in error["loc"] for error in detail), detail

    check()
    record_property("examples", examples["sent"])


RECORD_FIELDS = {"sku", "quantity", "unit_price", "customer", "tags", "note"}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT), inner, max_size=3),
    max_leaves=6,
)
OUT_OF_RANGE = {
    "quantity": st.integers(max_value=0) | st.integers(min_value=10_001),
    "unit_price": st.floats(max_value=-1e-9, allow_infinity=False)
    | st.floats(min_value=1e6 + 1, allow_infinity=False),
}
WRONG_TYPES = {
    # Strict types: "3", 3.0 and true are not quantities; 3 is a price, "3" is not.
    "quantity": st.text(TEXT) | st.booleans() | st.none() | st.floats(allow_nan=False)
    | st.lists(st.integers(1, 9), max_size=2) | OUT_OF_RANGE["quantity"],
    "unit_price": st.text(TEXT) | st.booleans() | st.none() | st.lists(st.floats(0, 1), max_size=2)
    | OUT_OF_RANGE["unit_price"],
    "sku": st.integers() | st.none() | st.booleans() | st.lists(SKU, max_size=2),
    "customer": st.integers() | st.floats(allow_nan=False) | st.none() | st.booleans(),
    "tags": st.text(TEXT) | st.integers() | st.lists(st.integers(), min_size=1, max_size=3),
    "note": st.integers() | st.none() | st.booleans() | st.lists(st.text(TEXT), max_size=2),
}
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")  # parsed, then refused
WRONG_SHAPES = ({}, {"records": []}, {"records": None}, {"records": "SKU-00001"}, [], "records")


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    """A body that must be refused with 422: broken JSON, a wrong type, a missing or extra
    field, a request of the wrong shape, or a number a float cannot hold."""
    valid = body(draw(st.lists(RECORD, min_size=1, max_size=3)))
    kind = draw(st.sampled_from(
        ["bytes", "truncated", "trailing", "wrong-type", "missing", "extra", "shape", "non-finite"]
    ))
    if kind == "bytes":
        return draw(st.binary(max_size=4096))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "trailing":
        return valid + draw(st.sampled_from([b"x", b",", b"{}", b"]", b"\x00", b"\xff"]))
    records = json.loads(valid)["records"]
    target = records[draw(st.integers(0, len(records) - 1))]
    if kind == "wrong-type":
        field = draw(st.sampled_from(sorted(WRONG_TYPES)))
        target[field] = draw(WRONG_TYPES[field])
    elif kind == "missing":
        del target[draw(st.sampled_from(["sku", "quantity", "unit_price", "customer"]))]
    elif kind == "extra":
        target[draw(st.text(TEXT, min_size=1).filter(lambda k: k not in RECORD_FIELDS))] = draw(
            JSON_VALUES
        )
    elif kind == "shape":
        shape = draw(
            st.sampled_from(WRONG_SHAPES)
            | st.just({"records": target})
            | st.just({"records": records, "more": 1})
            | JSON_VALUES.filter(lambda v: not isinstance(v, dict) or "records" not in v)
        )
        return json.dumps(shape).encode()
    else:
        target["unit_price"] = "@non-finite@"
        token = draw(st.sampled_from(NON_FINITE))
        return body(records).replace(b'"@non-finite@"', token.encode())
    return body(records)


def test_malformed_json_and_wrong_types_are_422(
    limited: Server, record_property: Callable[[str, object], None]
) -> None:
    examples = Counter[str]()

    @reproducible(3 * LIMIT_EXAMPLES)
    @given(content=malformed(), path=st.sampled_from(PATHS))
    def check(content: bytes, path: str) -> None:
        detail = refused(limited, path, content, 422, examples)["detail"]
        assert isinstance(detail, list) and detail

    check()
    record_property("examples", examples["sent"])


def test_values_at_their_limits_are_accepted(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """The other side of each limit: exactly at it is a 201, and stored."""
    server = server_factory(**LIMITS)
    longest = {
        "sku": "SKU-04999",
        "quantity": 10_000,
        "unit_price": 1e6,
        "customer": "\u00e9" * 64,
        "tags": ["t" * 32] * 8,
        "note": "n" * 512,
    }
    cheapest = {"sku": "SKU-00000", "quantity": 1, "unit_price": 0, "customer": "c"}
    full = padded(MAX_BODY_BYTES)
    sends: list[bytes | Iterator[bytes]] = [
        body([longest] * MAX_RECORDS),
        body([cheapest]),
        full,
        in_chunks(full, 4096),
    ]
    for index, content in enumerate(sends):
        path = PATHS[index % 2]
        response = server.client.post(path, content=content, headers=JSON)
        assert response.status_code == 201, (index, path, response.text[:500])
    assert submission_count(tmp_path / "service.db") == len(sends)


# ---------------------------------------------------------------------------------------------
# Where the published schema and the validation disagree


def test_schema_valid_integral_quantity_is_accepted(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    record = {"sku": "SKU-00003", "quantity": 3.0, "unit_price": 1.0, "customer": "c"}
    response = server.client.post(PATHS[0], content=body([record]), headers=JSON)
    assert response.status_code == 201, response.text


def test_sku_allows_only_ascii_digits(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    record = {"sku": "SKU-\u0661\u0662\u0663\u0664\u0665", "quantity": 1, "unit_price": 1.0,
              "customer": "c"}
    response = server.client.post(PATHS[0], content=body([record]), headers=JSON)
    assert response.status_code == 422, response.text
