"""tenants/schema.json: the JSON Schema of tenant files, generated from the model."""

from __future__ import annotations

import json

from cdnctl.tenants.model import Tenant

SCHEMA_ID = "https://cdnctl.dev/schemas/tenant-v1.json"


def render_schema() -> str:
    schema = Tenant.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "cdnctl tenant (v1)",
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
