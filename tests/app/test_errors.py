"""422 replies: bounded whatever the input, first errors kept, the total said."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from app.errors import (
    LOC_CHARS,
    MSG_CHARS,
    SHOWN_ERRORS,
    PartialValidationError,
    validation_body,
    validation_error_handler,
)

ERROR = {
    "type": "missing",
    "loc": ("body", "records", 0, "sku"),
    "msg": "Field required",
    "input": {"huge": "x" * 10_000},
    "ctx": {"error": ValueError("no")},
    "url": "https://errors.pydantic.dev/2/v/missing",
}


def test_input_ctx_and_url_are_dropped() -> None:
    body = validation_body(RequestValidationError([ERROR]))
    assert body == {
        "detail": [
            {"type": "missing", "loc": ["body", "records", 0, "sku"], "msg": "Field required"}
        ],
        "error_count": 1,
    }


def test_only_the_first_errors_are_kept_and_all_are_counted() -> None:
    errors = [{**ERROR, "loc": ("body", "records", i, "sku")} for i in range(100_000)]
    body = validation_body(RequestValidationError(errors))
    assert [e["loc"][2] for e in body["detail"]] == list(range(SHOWN_ERRORS))
    assert body["error_count"] == 100_000
    assert len(json.dumps(body)) < 1024


def test_a_partial_error_reports_its_total() -> None:
    body = validation_body(PartialValidationError([ERROR] * 3, total=20_001))
    assert len(body["detail"]) == 3 and body["error_count"] == 20_001


def test_client_chosen_locations_and_long_messages_are_cut() -> None:
    error = {**ERROR, "loc": ("body", "k" * 60_000), "msg": "m" * 60_000}
    (shown,) = validation_body(RequestValidationError([error]))["detail"]
    assert len(shown["loc"][1]) <= LOC_CHARS + 24 and shown["loc"][1].endswith(" chars)")
    assert len(shown["msg"]) <= MSG_CHARS + 24


def test_the_app_answers_every_validation_error_with_the_bounded_handler(
    serve: Callable[..., TestClient],
) -> None:
    client = serve()
    app = client.app
    assert app.exception_handlers[RequestValidationError] is validation_error_handler  # type: ignore[attr-defined]

    # Any route of the app, with a path parameter it cannot parse: a 60 KB value.
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app.add_api_route("/items/{item_id}", item)  # type: ignore[attr-defined]
    response = client.get("/items/" + "z" * 60_000)
    assert response.status_code == 422
    assert len(response.content) < 512, len(response.content)
    assert "zzzz" not in response.text
    assert response.json()["error_count"] == 1


def test_long_ids_on_the_real_routes_are_not_echoed(serve: Callable[..., TestClient]) -> None:
    client = serve()
    for path in ("/bulk/" + "z" * 60_000, "/products/" + "SKU-" * 15_000):
        response = client.get(path)
        assert response.status_code in (404, 422)  # refused by the pattern, whichever way
        assert len(response.content) < 512, len(response.content)
        assert "zzzz" not in response.text and "SKU-SKU-" not in response.text
