"""Bulk request bodies for the workload tests."""

from __future__ import annotations

import json
from typing import Any


def record(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "sku": "SKU-00042",
        "quantity": 3,
        "unit_price": 9.99,
        "customer": "c-17",
        "tags": ["promo"],
        "note": "free text",
    }
    values.update(overrides)
    return values


def body(*records: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"records": list(records), **top}).encode()
