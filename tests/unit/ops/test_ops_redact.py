"""The log processor and the masks: no secret, no sensitive digit and no audio reaches a log line."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import structlog
from hypothesis import given
from hypothesis import strategies as st

from ivr.ops.redact import (
    REDACTED,
    TIMER_NAMES,
    RedactSensitive,
    Sensitive,
    mask_digits,
    mask_value,
    redact_sensitive,
    scrub,
)
from ivr.sip.registration import REFRESH_TIMER, RETRY_TIMER
from ivr.sip.transaction import _TIMER_INPUTS


def run(**event: Any) -> dict[str, Any]:
    return dict(redact_sensitive(None, "info", {"event": "e", **event}))


def test_mask_value_shows_two_characters_at_each_end_of_long_values() -> None:
    assert mask_value("12345678") == "12****78"
    assert mask_value("4111111111111111") == "41************11"


def test_mask_value_hides_short_values_entirely() -> None:
    assert mask_value("1234") == "****"
    assert mask_value("1234567") == "*******"
    assert mask_value("") == ""


@given(st.text(max_size=40))
def test_mask_value_keeps_length_hides_at_least_half_and_is_idempotent(value: str) -> None:
    masked = mask_value(value)
    assert len(masked) == len(value)
    assert masked.count("*") >= len(value) / 2 or value.count("*") > 0
    assert mask_value(masked) == masked


@given(st.text(max_size=40))
def test_mask_digits_leaves_no_digit(text: str) -> None:
    masked = mask_digits(text)
    assert not any(ch.isdecimal() for ch in masked)
    assert len(masked) == len(text)


def test_secret_keys_are_redacted_whatever_their_spelling() -> None:
    out = run(password="hunter2", admin_token="t" * 20, **{"Proxy-Authorization": "Digest x"}, api_key="k", pin="1234")
    assert out["password"] == REDACTED
    assert out["admin_token"] == REDACTED
    assert out["Proxy-Authorization"] == REDACTED
    assert out["api_key"] == REDACTED
    assert out["pin"] == REDACTED


def test_keys_that_merely_contain_a_secret_word_are_kept() -> None:
    out = run(ping_ms=3, spinner="x", tokens_used=5, call_id="abc@host")
    assert out == {"event": "e", "ping_ms": 3, "spinner": "x", "tokens_used": 5, "call_id": "abc@host"}


def test_audio_keys_and_bytes_values_are_dropped() -> None:
    out = run(audio=[1, 2], pcm="x", frame=b"\x00" * 160, samples=np.zeros(160, dtype=np.int16), note=b"raw", n=1)
    assert out == {"event": "e", "n": 1}


def test_nested_structures_are_cleaned() -> None:
    out = run(data={"account": "1", "password": "p", "payload": b"x", "list": [b"x", {"secret": "s", "ok": 1}]})
    assert out["data"] == {"account": "1", "password": REDACTED, "list": [{"secret": REDACTED, "ok": 1}]}


def test_sensitive_wrapper_masks_digits_and_is_safe_to_print() -> None:
    value = Sensitive("acct 12345678")
    assert run(digits=value)["digits"] == "acct ********"
    assert str(value) == "acct ********"
    assert "1" not in repr(value)
    assert value.value == "acct 12345678"


def test_fields_named_sensitive_have_their_digits_masked_and_the_marker_is_removed() -> None:
    out = run(account="BG12 3456", caller="+359888123456", sensitive_fields=("account",))
    assert out == {"event": "e", "account": "BG** ****", "caller": "+359888123456"}


def test_single_field_name_is_accepted_as_sensitive_fields() -> None:
    assert run(account="12", sensitive_fields="account") == {"event": "e", "account": "**"}


def test_sensitive_flag_masks_the_input_fields_only() -> None:
    out = run(sensitive=True, digits="5566", value=1234, node="pin3", call_id="c-77")
    assert out == {
        "event": "e",
        "sensitive": True,
        "digits": "****",
        "value": "****",
        "node": "pin3",
        "call_id": "c-77",
    }


def test_without_marks_digits_pass_through() -> None:
    assert run(digits="5566")["digits"] == "5566"


def test_custom_word_lists() -> None:
    processor = RedactSensitive(secret_words={"iban"}, audio_keys={"blob"}, input_fields=("entry",))
    out = dict(
        processor(
            None, "info", {"event": "e", "iban": "x", "password": "p", "blob": 1, "entry": "12", "sensitive": True}
        )
    )
    assert out == {"event": "e", "iban": REDACTED, "password": "p", "entry": "**", "sensitive": True}


def test_event_text_is_not_touched() -> None:
    assert run()["event"] == "e"
    assert dict(redact_sensitive(None, "info", {"event": "pressed 1"}))["event"] == "pressed 1"


def test_scrub_drops_bytes_and_redacts_secrets_but_keeps_digits() -> None:
    assert scrub({"queue": "sales", "account": "123", "token": "t", "audio": b"x", "n": [1, b"y"]}) == {
        "queue": "sales",
        "account": "123",
        "token": REDACTED,
        "n": [1],
    }


def test_processor_in_a_structlog_chain_keeps_bound_context_clean() -> None:
    out = io.StringIO()
    structlog.reset_defaults()
    try:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                redact_sensitive,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        structlog.contextvars.bind_contextvars(call_id="c1", auth_password="pw")
        try:
            structlog.get_logger().info("collected", digits=Sensitive("9876"), pcm=b"\x01\x02", node="acct")
        finally:
            structlog.contextvars.clear_contextvars()
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line == {"call_id": "c1", "auth_password": REDACTED, "digits": "****", "node": "acct", "event": "collected"}


def test_a_sip_timer_token_is_not_a_secret_but_a_real_token_still_is() -> None:
    # The line that needs its token: "bug: unhandled error in a SIP timer" (ivr/daemon/sip_driver.py logged
    # token=token, an EndpointTimer (owner id, timer name)); the redactor used to print it as "[redacted]".
    out = run(token=(7, "B"), timer_token=[3, "refresh"], name_token="retry")
    assert out == {"event": "e", "token": (7, "B"), "timer_token": [3, "refresh"], "name_token": "retry"}
    assert run(token=True, admin_token=None) == {"event": "e", "token": True, "admin_token": None}  # "is one set?"
    hidden = run(token="s3cret-admin-token-0123456789", admin_token=(7, "hunter2"), password=(7, "B"),
                 api_token=["x", "B"], pin="B", auth_token_secret=(1, "B"), access_token=7,
                 token_b=(True, "B"))  # fmt: skip
    assert all(value == REDACTED for key, value in hidden.items() if key != "event"), hidden
    assert scrub({"timer": {"token": (2, "K")}, "token": "tok"}) == {"timer": {"token": (2, "K")}, "token": REDACTED}


def test_timer_names_are_those_of_ivr_sip() -> None:
    assert {*_TIMER_INPUTS, REFRESH_TIMER, RETRY_TIMER} == TIMER_NAMES


def test_the_sip_timer_bug_line_keeps_its_token_in_the_daemons_log_chain() -> None:
    out = io.StringIO()
    structlog.reset_defaults()
    try:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                redact_sensitive,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        try:
            raise KeyError(7)
        except KeyError:
            structlog.get_logger().exception("bug: unhandled error in a SIP timer", token=(7, "B"))
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["event"] == "bug: unhandled error in a SIP timer" and line["token"] == [7, "B"]
    assert "KeyError" in line["exception"]
