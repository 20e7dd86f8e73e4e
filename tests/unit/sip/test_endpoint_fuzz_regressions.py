"""UAS-core defects the daemon fuzzer (tests/fuzz) found, as byte-for-byte unit tests."""

from __future__ import annotations

import pytest

from ivr.sip.endpoint import CallConfirmed, CallEnded, EndReason, IncomingCall, ReInvite
from ivr.sip.message import Request, Response
from tests.unit.sip.test_endpoint import SDP, Harness, answered_call, in_dialog, invite


@pytest.mark.parametrize("final", [488, None])
def test_an_ack_in_the_dialog_for_a_reinvite_not_answered_2xx_is_absorbed_without_an_error(
    final: int | None,
) -> None:
    """A re-INVITE refused (488) or not answered yet, then an ACK with its CSeq but a new branch (so it matches no
    transaction: it looks like the ACK of a 2xx). It used to reach the re-INVITE's transaction as 'the ACK for
    your 2xx', which raised TransactionError out of SipEndpoint.receive."""
    h = Harness()
    leg, tag = answered_call(h)
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-ack"))
    h.feed(in_dialog("INVITE", tag, 2, "z9hG4bK-re", body=SDP))
    request = h.event(ReInvite).request  # type: ignore[attr-defined]
    if final is not None:
        h.ep.respond(leg, final, request=request)
        h.pump()
    h.take()
    h.feed(in_dialog("ACK", tag, 2, "z9hG4bK-other-branch"))  # raised TransactionError before the fix
    assert h.take() == []
    if final is None:  # the re-INVITE is still answered as usual, and its 2xx retransmitted until its ACK
        h.ep.respond(leg, 200, request=request, body=b"v=0\r\n", content_type="application/sdp")
        h.pump()
        assert [m.status for m in h.take() if isinstance(m, Response)] == [200]
        h.feed(in_dialog("ACK", tag, 2, "z9hG4bK-ack2"))
        h.advance(40)
        assert h.take() == []


def test_an_ack_for_the_2xx_that_reuses_the_invites_branch_confirms_the_call() -> None:
    """RFC 2543 peers send the ACK of a 2xx with the INVITE's branch. It went to the INVITE's transaction (Accepted),
    which stopped the 2xx retransmissions and timer L's ACK timeout and handed the ACK up, where it was dropped:
    the call was never confirmed, never timed out, and held its port until shutdown."""
    h = Harness()
    _leg, tag = answered_call(h)  # its INVITE's branch is z9hG4bK-1
    h.feed(in_dialog("ACK", tag, 1, "z9hG4bK-1"))
    assert h.event(CallConfirmed)  # no CallConfirmed before the fix


def test_an_ack_of_another_call_with_this_calls_invite_branch_leaves_this_call_alone() -> None:
    """An ACK whose branch is that of another call's INVITE (Accepted) but whose Call-ID and tags are its own call's
    (found by the fuzzer): before, it stopped the other call's 2xx retransmissions and ACK timeout, and the other
    call hung in 'answered' for good; its own call was never confirmed either."""
    h = Harness()
    first, first_tag = answered_call(h)  # branch z9hG4bK-1, Call-ID call-1
    h.feed(invite(branch="z9hG4bK-2", call_id="call-2", from_tag="other"))
    second = [e for e in h.events if isinstance(e, IncomingCall)][-1].leg
    h.ep.answer(second, b"v=0\r\n")
    h.pump()
    second_tag = second.local_tag
    h.take()
    ack = in_dialog("ACK", second_tag, 1, "z9hG4bK-1", call_id="call-2").replace(b"tag=caller-tag", b"tag=other")
    h.feed(ack)
    confirmed = [e.leg for e in h.events if isinstance(e, CallConfirmed)]
    assert confirmed == [second]
    h.advance(40)  # the first call: its 2xx retransmitted, then no ACK within 64*T1: BYE (13.3.1.4)
    sent = h.take()
    assert any(isinstance(m, Response) and m.status == 200 and m.call_id == "call-1" for m in sent)
    assert any(isinstance(m, Request) and m.method == "BYE" and m.call_id == "call-1" for m in sent)
    ended = [e for e in h.events if isinstance(e, CallEnded) and e.leg is first]
    assert ended and ended[0].reason is EndReason.ACK_TIMEOUT
    assert first_tag
