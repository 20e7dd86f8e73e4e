"""Scale-out without containers: Kamailio's dispatcher in front of two ``ivr serve`` nodes, on loopback.

Kamailio runs docker/kamailio/kamailio.cfg itself (the file the compose topology uses), moved onto 127.0.0.1 and
free ports with ``-A`` defines and with a one-second OPTIONS probe. SIPp places calls through it; each node's own
call-end log lines say which node took which call. The tests prove what docs/ARCHITECTURE.md "Scale-out" promises:

- calls spread over both nodes (round robin), in-dialog requests (ACK, BYE) follow the Record-Route through the proxy;
- a node that drains answers OPTIONS with 503, the probe marks it inactive, and new calls all go to the other node,
  while the call it already had finishes normally through the proxy;
- a call that reaches a draining node before the probe noticed gets its 503 and is retried on the other node.

Skipped (with the install command) when kamailio or SIPp is missing.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kamailio_peer import Kamailio, admin_json, kamailio_installed
from peers import IvrDaemon, PeerError, Sipp, SippResult, sip_options_ping

pytestmark = pytest.mark.interop

TOKEN = "kamailio-interop-admin-token"
NODE_OVERRIDES = {"admin": {"token": TOKEN}}
STOP_S = 5.0  # a node with no call left exits at once on SIGTERM
SHORT_CALL_MS = 300
BATCH = 10
# Calls up while a node drains: they must outlast the drain, the probe and a whole batch of new calls.
HELD_CALL_MS = 6000


@pytest.fixture
def need_kamailio() -> None:
    if not kamailio_installed():
        pytest.skip("kamailio not installed (apt-get install -y kamailio)")


def _ended(ivr: IvrDaemon) -> int:
    """Calls this node answered and saw end (its call-end log lines)."""
    return len(ivr.call_end_records())


def _admin_calls(ivr: IvrDaemon) -> dict[str, object]:
    """``GET /calls`` of the node's admin API: ``{"count": N, "calls": [...], "draining": bool}``."""
    status, body = admin_json(ivr, "GET", "/calls", TOKEN)
    if status != 200 or not isinstance(body, dict):
        raise PeerError(f"GET /calls: {status} {body}")
    return body


def _active(ivr: IvrDaemon) -> int:
    count = _admin_calls(ivr)["count"]
    assert isinstance(count, int), count
    return count


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}\n{describe()}")
        time.sleep(0.05)


def _calls(proxy: Kamailio, calls: int, hold_ms: int, *, trace: bool = False) -> Sipp:
    """SIPp callers through the proxy: INVITE, ACK, hold ``hold_ms``, BYE (ACK and BYE follow the Record-Route)."""
    return Sipp(
        "uac_hold_bye.xml",
        proxy.sip_target,
        calls=calls,
        rate=50,
        limit=calls,
        duration_ms=hold_ms,
        timeout=30,
        trace_msg=trace,
    )


def _received(trace: str) -> list[str]:
    """Every SIP message SIPp received, as text, from its ``-trace_msg`` log."""
    messages = []
    for block in trace.split("-" * 47):
        if "message received" in block:
            messages.append(block.split("\n\n", 1)[-1].lstrip("\n"))
    return messages


def _received_invite_2xx(trace: str) -> list[str]:
    """Every 2xx to an INVITE that SIPp received."""
    return [
        m for m in _received(trace) if re.match(r"SIP/2\.0 2\d\d ", m) and re.search(r"^CSeq:\s*\d+ INVITE", m, re.M)
    ]


def _check(result: SippResult, calls: int, *peers: IvrDaemon | Kamailio) -> None:
    context = "\n".join([result.describe(), *(p.describe() for p in peers)])
    assert result.returncode == 0, context
    assert result.stats is not None, context
    assert (result.stats.successful, result.stats.failed) == (calls, 0), context


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_kamailio", "need_sipp")
def test_in_dialog_requests_of_both_sides_follow_the_record_route_through_the_proxy() -> None:
    """RFC 3261 12.1.1: a UAS copies every Record-Route of the INVITE into its 2xx, so the caller's ACK and BYE carry
    a Route to the proxy, which keeps no per-call state and routes them by it. The node's own BYE (end of the welcome
    prompt) takes the same route the other way."""
    with (
        IvrDaemon(stop_timeout=STOP_S) as node,
        Kamailio([node.sip_target]) as proxy,
        Sipp("uac_wait_bye.xml", proxy.sip_target, calls=1, timeout=30, trace_msg=True) as uac,
    ):
        uac.start()
        trace = uac.workdir / "messages.log"
        _wait_for("SIPp got the 200 OK", lambda: bool(_received_invite_2xx(_read_text(trace))), 10, proxy.describe)
        answer = _received_invite_2xx(_read_text(trace))[0]
        record_route = re.search(r"^Record-Route:\s*(.+)$", answer, re.M)
        if record_route is None:
            node.kill()  # its ACK never comes: it would hold the call (and its drain) for 64*T1
        assert record_route is not None, f"the 200 OK lost the proxy's Record-Route:\n{answer}"
        assert f"sip:{proxy.sip_target};" in record_route.group(1), answer
        result = uac.wait()
        _check(result, 1, proxy, node)
        byes = [m for m in _received(result.messages) if m.startswith("BYE ")]
        assert len(byes) == 1, result.messages
        top_via = re.search(r"^Via:\s*SIP/2\.0/UDP\s+([^;\s,]+)", byes[0], re.M)
        assert top_via is not None and top_via.group(1) == proxy.sip_target, byes[0]
        _wait_for("the call ended on the node", lambda: _ended(node) == 1, 5, node.describe)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_kamailio", "need_sipp")
def test_dispatcher_spreads_calls_over_two_nodes_and_moves_new_calls_off_a_draining_one() -> None:
    with (
        IvrDaemon(hold_calls=True, overrides=NODE_OVERRIDES, stop_timeout=STOP_S) as a,
        IvrDaemon(hold_calls=True, overrides=NODE_OVERRIDES, stop_timeout=STOP_S) as b,
        Kamailio([a.sip_target, b.sip_target], ping_interval=1) as proxy,
    ):
        everyone = (proxy, a, b)

        def describe() -> str:
            return "\n".join(p.describe() for p in everyone)

        assert proxy.destination(a.sip_target).active and proxy.destination(b.sip_target).active, describe()

        # 1. Both nodes active: round robin spreads the calls.
        first = _calls(proxy, BATCH, SHORT_CALL_MS, trace=True).run()
        _check(first, BATCH, *everyone)
        _wait_for(f"{BATCH} call-end records", lambda: _ended(a) + _ended(b) == BATCH, 5, describe)
        spread = (_ended(a), _ended(b))
        assert min(spread) >= BATCH // 2 - 1, f"calls per node {spread}\n{describe()}"

        # 2. One call up on each node, then node a drains through its admin API.
        held = _calls(proxy, 2, HELD_CALL_MS)
        with held:
            held.start()
            held.wait_current_calls(2, timeout=10)
            _wait_for("one active call on each node", lambda: _active(a) == _active(b) == 1, 5, describe)
            status, body = admin_json(a, "POST", "/drain", TOKEN)
            assert status == 202, (status, body)
            assert _admin_calls(a)["draining"] is True and _admin_calls(b)["draining"] is False, describe()
            assert sip_options_ping(a.host, a.sip_port) == 503, describe()
            # the next OPTIONS probe gets the 503 and takes node a out; node b stays in
            down = time.monotonic()
            proxy.wait_state(a.sip_target, active=False, timeout=5)
            detected_s = time.monotonic() - down
            assert proxy.destination(b.sip_target).active, describe()

            # 3. New calls all go to node b, while node a's call goes on.
            _check(_calls(proxy, BATCH, SHORT_CALL_MS).run(), BATCH, *everyone)
            _wait_for("node b ended the new calls", lambda: _ended(b) == spread[1] + BATCH, 5, describe)
            assert _ended(a) == spread[0], f"node a took a call while draining\n{describe()}"
            # and none was even offered to it: the probe had taken it out (no 503 and retry in the failure route)
            assert "ivr node refused" not in proxy.stderr_text(), describe()
            assert _active(a) == 1, describe()

            # The call that was up on the draining node ends normally: SIPp's BYE reaches it through the proxy.
            _check(held.wait(), 2, *everyone)
        _wait_for(
            "the held calls ended",
            lambda: (_ended(a), _ended(b)) == (spread[0] + 1, spread[1] + BATCH + 1),
            5,
            describe,
        )
        print(
            f"calls per node: both active {spread}; after node a drained: a +1 (held call), b +{BATCH + 1}; "
            f"probe marked node a inactive {detected_s:.2f}s after the drain"
        )


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("need_kamailio", "need_sipp")
def test_calls_reaching_a_draining_node_before_the_probe_notices_are_retried_on_the_other_node() -> None:
    with (
        IvrDaemon(hold_calls=True, overrides=NODE_OVERRIDES, stop_timeout=STOP_S) as a,
        IvrDaemon(hold_calls=True, overrides=NODE_OVERRIDES, stop_timeout=STOP_S) as b,
        # a probe so slow that it cannot notice the drain during the test: only the failure route can help
        Kamailio([a.sip_target, b.sip_target], ping_interval=120) as proxy,
    ):
        everyone = (proxy, a, b)

        def describe() -> str:
            return "\n".join(p.describe() for p in everyone)

        held = _calls(proxy, 2, HELD_CALL_MS)
        with held:
            held.start()
            held.wait_current_calls(2, timeout=10)
            _wait_for("one active call on each node", lambda: _active(a) == _active(b) == 1, 5, describe)
            # SIGTERM: node a drains (503 to INVITE and OPTIONS) and stays up while its call lasts
            a.signal(signal.SIGTERM)
            _wait_for("node a draining", lambda: sip_options_ping(a.host, a.sip_port, timeout=0.3) == 503, 5, describe)
            assert proxy.destination(a.sip_target).active, "the probe must not have run yet\n" + describe()

            retried = _calls(proxy, BATCH, SHORT_CALL_MS, trace=True).run()
            _check(retried, BATCH, *everyone)
            _wait_for("node b ended the new calls", lambda: _ended(b) == BATCH, 5, describe)
            assert _ended(a) == 0, describe()
            refused = proxy.stderr_text().count("ivr node refused")
            # round robin sent about every other call to node a first; each came back 503 and went on to node b
            assert refused >= BATCH // 2 - 1, describe()
            _check(held.wait(), 2, *everyone)
        # node a's last call is over: its drain completes and it exits by itself, cleanly
        _wait_for("node a exited after its drain", lambda: not a.alive(), 10, describe)
        assert a.terminate() == 0, describe()
        print(f"calls refused by the draining node and retried on the other: {refused} of {BATCH}")
