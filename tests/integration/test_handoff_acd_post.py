"""The HTTP POST of the call's context to the ACD before a handoff: body, retries, and `required`.

Run on virtual time with the simulator: the daemon's HTTP client is the scenario's fixtures, which keep every
request they answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ivr.simulator.lab import IvrLab
from ivr.simulator.virtual import run_virtual

FLOW = """\
name: acd
languages: [en]
language: en
start: menu
prompts:
  menu: {en: "Press one for sales."}
  sorry: {en: "Sorry, nobody can take your call."}
nodes:
  menu:
    type: menu
    prompt: menu
    options: [{key: "1", next: sales}]
    failure: sorry
  sales:
    type: queue
    queue: sales
    data: {intent: sales, account: "42"}
    failure: sorry
  sorry: {type: hangup, prompt: sorry}
"""

QUEUES = """\
queues:
  sales:
    uri: sip:sales@127.0.0.1:5090
    method: refer
    http: {{url: "http://acd.example.com/context", timeout: 1s, retries: 2, required: {required}}}
"""


def _lab(tmp_path: Path, required: bool) -> Path:
    (tmp_path / "acd.yaml").write_text(FLOW)
    (tmp_path / "queues.yaml").write_text(QUEUES.format(required=str(required).lower()))
    config = tmp_path / "ivr.yaml"
    welcome = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "en" / "welcome.wav"
    config.write_text(
        f"routes:\n  - {{client: acme, numbers: ['*'], flow: acd.yaml}}\nqueues: queues.yaml\n"
        f"calls: {{welcome_prompt: {welcome}}}\n"
    )
    return config


def _call(config: Path, answers: list[int]) -> tuple[list[str], list[object], str]:
    async def main() -> tuple[list[str], list[object], str]:
        async with IvrLab(config=config) as lab:
            http = {"POST http://acd.example.com/context": {"status": answers[0]}}
            call = await lab.call("100", at=dt.datetime(2026, 11, 24, 10, 0), http=http)
            await call.expect_prompt("menu")
            await call.press("1")
            await call.silence(3)
            requests = list(lab._http.current.requests)
            await call.finish()
            transfers = call.transfers()
            return (
                [h.describe() for h in call.final_heard],
                [(r.method, r.json) for r in requests],
                (transfers[0].queue if transfers else ""),
            )

    result: tuple[list[str], list[object], str] = run_virtual(main)
    return result


def test_the_context_is_posted_before_the_transfer(tmp_path: Path) -> None:
    _heard, requests, queue = _call(_lab(tmp_path, required=True), [200])
    assert queue == "sales"
    assert len(requests) == 1
    method, body = requests[0]  # type: ignore[misc]
    assert method == "POST"
    assert body["queue"] == "sales" and body["client"] == "acme" and body["caller"] == "0888123456"
    assert body["data"] == {"intent": "sales", "account": "42"}
    assert body["dialled"] == "100" and body["call_id"]


def test_a_refusing_acd_is_tried_again_and_a_required_context_stops_the_transfer(tmp_path: Path) -> None:
    heard, requests, queue = _call(_lab(tmp_path, required=True), [503])
    assert len(requests) == 3  # the first try and two retries
    assert queue == ""  # no REFER was sent
    assert heard[-1].startswith("sorry")


def test_a_context_that_is_not_required_does_not_stop_the_transfer(tmp_path: Path) -> None:
    _heard, requests, queue = _call(_lab(tmp_path, required=False), [503])
    assert len(requests) == 3
    assert queue == "sales"
