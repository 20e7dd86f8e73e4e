"""The flow language as JSON Schema, for editors (VS Code's YAML extension, JetBrains) to autocomplete and flag
flow files as ops type them. ``ivr schema -o flow.schema.json`` writes it; a flow file points at it with a first
line ``# yaml-language-server: $schema=flow.schema.json``."""

from __future__ import annotations

from typing import Any

from ivr.flows.model import Flow

__all__ = ["SCHEMA_ID", "flow_json_schema"]

SCHEMA_ID = "https://ivr.invalid/schemas/flow.schema.json"


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow file."""
    schema = Flow.model_json_schema(by_alias=True, mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }
    schema["title"] = "ivr flow"
    schema["description"] = "An IVR call flow: languages, prompts, calendars and nodes. See docs/flows.md."
    return schema
