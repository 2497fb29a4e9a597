"""JSON schemas of the repository's kinds, generated from the models (the contract in
`repo-layout/schema/` is written by `reconciler schema --out repo-layout/schema`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reconciler.core import model, pins

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def all_schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    kinds: dict[tuple[str, str], type[BaseModel]] = {
        **model.KINDS,
        (model.OUR_API_VERSION, pins.PIN_KIND): pins.Pin,
    }
    for (api_version, kind), cls in kinds.items():
        doc = cls.model_json_schema(by_alias=True, mode="validation")
        doc["$schema"] = SCHEMA_DIALECT
        doc["$id"] = f"https://{model.OUR_GROUP}/schema/{kind}.schema.json"
        doc["x-api-version"] = api_version
        out[kind] = doc
    return out
