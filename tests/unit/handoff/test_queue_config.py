"""configs/queues.yaml: typed queue endpoints, errors at file:line, and the shipped file loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ivr.handoff.config import QueueConfigError, load_queues, load_queues_text

REPO = Path(__file__).resolve().parents[3]

GOOD = textwrap.dedent(
    """
    queues:
      billing:
        uri: sip:billing@10.0.0.5:5060
        method: refer-then-bridge
        headers: {X-IVR-Account: account}
        uui: {keys: [account, language], max_bytes: 64, purpose: isdn-interwork}
        http: {url: "http://acd.example/context", timeout: 1500ms, retries: 2, required: true}
        refer_timeout: 10s
        answer_timeout: 20s
      sales:
        uri: sip:sales@10.0.0.5
    """
)


def test_shipped_queues_file_names_every_queue_of_the_example_flows() -> None:
    table = load_queues(REPO / "configs" / "queues.yaml")
    assert {"billing", "support", "sales", "operator"} <= table.names


def test_queue_settings_are_typed_and_defaulted() -> None:
    table = load_queues_text(GOOD, "q.yaml")
    billing = table.get("billing")
    assert billing is not None and billing.name == "billing" and billing.method == "refer-then-bridge"
    assert billing.refer_timeout == 10.0 and billing.answer_timeout == 20.0
    assert billing.http is not None and billing.http.timeout == 1.5 and billing.http.required
    assert billing.header_for("account") == "X-IVR-Account" and billing.header_for("language") is None
    sales = table.get("sales")
    assert sales is not None and sales.method == "refer" and sales.header_for("account_type") == "X-IVR-Account-Type"
    assert table.get("nowhere") is None and "sales" in table and len(table) == 2


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        (("method: refer-then-bridge", "method: dial"), 5, "method"),
        (("uri: sip:sales@10.0.0.5", "uri: tel:+3592123"), 12, "not a sip: or sips: URI"),
        (("uri: sip:sales@10.0.0.5", "uri: sip:sales@10.0.0.5?X-A=1"), 12, "no ?headers"),
        (("{X-IVR-Account: account}", "{Call-ID: account}"), 6, "sets itself"),
        (("refer_timeout: 10s", "refer_timeout: soon"), 9, "not a duration"),
        (("retries: 2", "retries: 2, colour: red"), 8, "unknown setting"),
    ],
)
def test_bad_settings_are_reported_at_file_and_line(change: tuple[str, str], line: int, words: str) -> None:
    with pytest.raises(QueueConfigError) as caught:
        load_queues_text(GOOD.replace(*change), "q.yaml")
    assert f"q.yaml:{line}:" in str(caught.value) and words in str(caught.value)


def test_unreadable_file_and_yaml_syntax_errors_name_the_file() -> None:
    with pytest.raises(QueueConfigError, match="cannot read"):
        load_queues(REPO / "configs" / "no-such-queues.yaml")
    with pytest.raises(QueueConfigError, match=r"q.yaml:3:\d+: YAML syntax error"):
        load_queues_text("queues:\n  a: [\n", "q.yaml")
