"""The daemon fuzzer as part of the suite: fixed seeds, a bounded number of mutations, every invariant checked.

See tests/fuzz/fuzz_harness.py for the target and the invariants; ``python bench/fuzz_daemon.py`` runs longer
campaigns. On this 2-core machine the welcome campaign (20,000 mutated messages, ~27,000 messages in all) takes
about 25 s.
"""

from __future__ import annotations

import random

import pytest

from ivr.sip.message import Request, parse_message
from tests.fuzz.fuzz_harness import CampaignResult, Options, replay, run_campaign
from tests.fuzz.fuzz_mutator import Mutator, Pool
from tests.fuzz.fuzz_seeds import BODIES, SEEDS, fill

WELCOME_MUTATIONS = 20_000
FLOWS_MUTATIONS = 4_000


def _report(result: CampaignResult) -> str:
    lines = [f"{len(result.violations)} invariant violation(s) in {result.messages} messages (seed {result.seed}):"]
    for violation in result.violations[:10]:
        last = violation.messages[-1][1][:400] if violation.messages else b""
        lines.append(f"  {violation}\n    last message: {last!r}")
    return "\n".join(lines)


def _values(seed_name: str) -> dict[str, str]:
    return {"HOST": "127.0.0.1", "PORT": "5070", "RTP": "6000", "CALLID": f"{seed_name}@fuzz", "FTAG": "f1",
            "BRANCH": "z9hG4bKseed", "CSEQ": "1", "TTAG": "t1"}  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.name)
def test_every_seed_is_a_valid_sip_message(seed: object) -> None:
    from tests.fuzz.fuzz_seeds import Seed

    assert isinstance(seed, Seed)
    values = _values(seed.name)
    values["BODY"] = BODIES[seed.body] if seed.body else ""
    text = seed.text if seed.body is not None else seed.text.replace("$BODY", "")
    msg = parse_message(fill(text, values).replace("\n", "\r\n").encode())
    assert isinstance(msg, Request) and msg.method == seed.method


def test_the_mutator_is_deterministic_from_its_seed() -> None:
    data = fill(SEEDS[0].text, {**_values("x"), "BODY": BODIES["sipp"]}).replace("\n", "\r\n").encode()
    runs = []
    for _ in range(2):
        rng, pool = random.Random(7), Pool()
        runs.append([Mutator().mutate(data, rng, pool, 3) for _ in range(200)])
    assert runs[0] == runs[1]
    assert len({out for out, _ in runs[0]}) > 150  # and it does mutate


def test_a_plain_call_passes_every_invariant() -> None:
    """The harness itself: INVITE, ACK, BYE of a well-behaved caller break nothing."""
    values = {**_values("plain"), "BODY": BODIES["sipp-dtmf"]}
    by_name = {s.name: s for s in SEEDS}
    invite = fill(by_name["invite-sipp-uac"].text, values).replace("\n", "\r\n").encode()
    tagged = {**values, "TTAG": "@@TTAG:plain@fuzz@@", "BODY": ""}
    ack = fill(by_name["ack"].text, {**tagged, "BRANCH": "z9hG4bKack"}).replace("\n", "\r\n").encode()
    bye = fill(by_name["bye"].text, {**tagged, "BRANCH": "z9hG4bKbye", "CSEQ": "2"}).replace("\n", "\r\n").encode()
    assert replay([("sip", invite), ("sip", ack), ("sip", bye)], Options()) == []


def test_fuzz_the_daemon_with_the_welcome_application() -> None:
    result = run_campaign(20260501, WELCOME_MUTATIONS, Options())
    assert result.mutations == WELCOME_MUTATIONS
    assert not result.violations, _report(result)
    # the campaign reached the daemon's paths, not only its parser
    assert result.invites_checked > 2000 and result.responses[200] > 5000 and result.rtp_packets > 500
    assert {400, 415, 481, 488} <= set(result.responses)


def test_fuzz_the_daemon_with_the_example_flows() -> None:
    result = run_campaign(20260502, FLOWS_MUTATIONS, Options(flows=True))
    assert not result.violations, _report(result)
    assert result.invites_checked > 300 and result.responses[200] > 500
