"""Flows: the YAML language ops write IVR menus in, its loader and static checks, calendars and spoken numbers.

This package knows no SIP and no media (ARCHITECTURE.md rule 2): it describes and checks what a call should do;
the engine (:mod:`ivr.flows.engine`) runs a flow against a call through the Protocols of :mod:`ivr.flows.runtime`.
"""

from ivr.flows.calendar import Calendar, CalendarStatus, calendar_status, is_open, next_opening
from ivr.flows.checks import check_flow, reachable_nodes
from ivr.flows.engine import CallOutcome, FlowEngine
from ivr.flows.loader import (
    FlowError,
    FlowTree,
    LoadedFlow,
    Problem,
    load_calendar_file,
    load_flow,
    load_flow_text,
    load_flow_tree,
)
from ivr.flows.model import Flow, parse_duration
from ivr.flows.prompt_sources import PromptMissing, PromptSource, resolve_prompt
from ivr.flows.schema import flow_json_schema

__all__ = [
    "Calendar",
    "CalendarStatus",
    "CallOutcome",
    "Flow",
    "FlowEngine",
    "FlowError",
    "FlowTree",
    "LoadedFlow",
    "Problem",
    "PromptMissing",
    "PromptSource",
    "calendar_status",
    "check_flow",
    "flow_json_schema",
    "is_open",
    "load_calendar_file",
    "load_flow",
    "load_flow_text",
    "load_flow_tree",
    "next_opening",
    "parse_duration",
    "reachable_nodes",
    "resolve_prompt",
]
