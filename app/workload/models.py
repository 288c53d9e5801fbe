"""Request and response shapes of the bulk endpoints. Strict types: "3" is not a quantity."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

SKU_PATTERN = r"^SKU-[0-9]{5}$"  # not \d: the Rust regex engine matches any Unicode digit
Tag = Annotated[str, Field(max_length=32)]


def _whole_number(value: object) -> object:
    # JSON Schema's "integer" includes 3.0; strings and booleans stay refused by strict mode.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Quantity = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_whole_number)]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=SKU_PATTERN, description="Product code; unknown codes are counted.")
    quantity: Quantity
    unit_price: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)
    customer: str = Field(min_length=1, max_length=64)
    tags: list[Tag] = Field(default_factory=list, max_length=8)
    note: str = Field("", max_length=512)


def bulk_request_model(max_records: int) -> type[BaseModel]:
    """The request body model, bounded by MAX_BULK_RECORDS (a setting, hence built at start).

    cache_strings="keys": pydantic would otherwise keep up to 16k request strings (customers,
    notes) in a process-wide cache, long-lived objects that pin the pymalloc arenas they sit in.
    """
    return create_model(
        "BulkRequest",
        __config__=ConfigDict(extra="forbid", strict=True, cache_strings="keys"),
        records=(list[Record], Field(min_length=1, max_length=max_records)),
    )


def bulk_envelope_model(max_records: int) -> type[BaseModel]:
    """The request body with its records left unvalidated, to be validated a slice at a time.

    Unknown top-level keys are ignored here and reported by the caller, which counts them
    without asking pydantic for one error object each.
    """
    return create_model(
        "BulkEnvelope",
        __config__=ConfigDict(extra="ignore", strict=True),
        records=(list[Any], Field(min_length=1, max_length=max_records)),
    )


class CategoryTotal(BaseModel):
    records: int
    quantity: int
    gross: float


class BulkSummary(BaseModel):
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    records: int
    total_amount: float
    unknown_skus: int
    by_category: dict[str, CategoryTotal]


class Product(BaseModel):
    sku: str
    name: str
    category: str
    unit_weight_g: int
    tax_rate: float


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its local $defs references inlined, for an OpenAPI requestBody."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined
