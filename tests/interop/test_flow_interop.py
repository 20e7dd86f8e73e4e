"""A real softphone walks a flow by RFC 4733 keys: baresip dials the daemon, picks a language, types an account
number with #, confirms the read-back, and the call record shows the path and what was typed."""

from __future__ import annotations

import sqlite3
import textwrap
import time
from pathlib import Path

import pytest

from tests.interop.peers import Baresip, IvrDaemon

pytestmark = pytest.mark.interop

FLOW = textwrap.dedent(
    """
    name: interop-line
    languages: [bg, en]
    language: bg
    fallback: bg
    start: choose-language
    prompts:
      choose: {bg: "За български натиснете едно.", en: "For English, press two."}
      enter-account: {bg: "Въведете номера на сметката и диез.", en: "Enter your account number, then hash."}
      you-entered: {bg: "Въведохте", en: "You entered"}
      confirm: {bg: "Ако е вярно, натиснете едно.", en: "If that is right, press one."}
      thanks: {bg: "Благодарим.", en: "Thank you."}
      sorry: {bg: "Съжаляваме.", en: "Sorry."}
      bye: {bg: "Довиждане.", en: "Goodbye."}
    nodes:
      choose-language:
        type: menu
        prompt: choose
        options:
          - {key: "1", next: speak-bulgarian}
          - {key: "2", next: speak-english}
        timeout: 6s
        no_input: {prompt: sorry, tries: 2}
        no_match: {prompt: sorry, tries: 2}
        failure: goodbye
      speak-bulgarian: {type: language, language: bg, next: account}
      speak-english: {type: language, language: en, next: account}
      account:
        type: collect
        prompt: enter-account
        into: account
        min_digits: 6
        max_digits: 10
        terminator: "#"
        first_digit: 8s
        inter_digit: 4s
        total: 30s
        confirm:
          prompt: [you-entered, {say: "{{ account }}", as: digits}, confirm]
          yes: "1"
          no: "2"
        no_input: {prompt: sorry, tries: 2}
        no_match: {prompt: sorry, tries: 2}
        failure: goodbye
        next: thanks
      thanks: {type: play, prompt: thanks, next: goodbye}
      goodbye: {type: hangup, prompt: bye}
    """
)


def _records(db_path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("select * from cdr")]


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("need_baresip")
def test_baresip_walks_a_flow_by_rfc4733_keys(tmp_path: Path) -> None:
    flow = tmp_path / "line.yaml"
    flow.write_text(FLOW)
    overrides = {
        "routes": [{"client": "interop", "numbers": ["*"], "flow": str(flow)}],
        "flows": {"prompt_cache": str(tmp_path / "cache")},
    }
    cdr = tmp_path / "cdr.db"
    daemon = IvrDaemon(flows=True, overrides=overrides, ready_timeout=60, extra_args=["--cdr", f"sqlite:///{cdr}"])
    with daemon as ivr, Baresip() as phone:
        phone.dial(ivr.uri)
        phone.wait_event("CALL_ESTABLISHED", 10)
        time.sleep(0.8)
        phone.send_digit("2")  # English, typed over the menu prompt (barge-in)
        time.sleep(2.5)
        for key in "12345678#":
            phone.send_digit(key)
            time.sleep(0.35)
        time.sleep(1.0)
        phone.send_digit("1")  # "if that is right, press one", typed during the read-back
        closed = phone.wait_event("CALL_CLOSED", 30)
        time.sleep(0.5)
        assert ivr.terminate() == 0, ivr.describe()
    assert closed.param == "Connection reset by peer", closed  # the flow's hangup node sent BYE
    (record,) = _records(cdr)
    assert record["client"] == "interop" and record["flow"] == "interop-line", record
    assert '"speak-english"' in str(record["path"]) and '"thanks"' in str(record["path"]), record["path"]
    assert "12345678" in str(record["inputs"]), record["inputs"]
    assert record["end_reason"] == "local_bye", record
