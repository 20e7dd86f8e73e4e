"""RFC 3261 section 12 dialogs: creation on both sides, in-dialog requests (loose and strict routing), CSeq ordering,
target refresh, and the ACK for a 2xx. Messages are RFC 3261 examples (16.12.1.1 trapezoid, 24.2 call flow, the
12.2.1.1 strict-routing example) and a SIPp call through Kamailio."""

from __future__ import annotations

import pytest

from ivr.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogState,
    dialog_id_for_request,
    dialog_id_for_response,
)
from ivr.sip.headers import Via
from ivr.sip.message import Message, Request, Response, make_response, parse_message
from ivr.sip.uri import SipURI


def sip(text: str) -> Message:
    return parse_message(text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n")


def req(text: str) -> Request:
    message = sip(text)
    assert isinstance(message, Request)
    return message


def resp(text: str) -> Response:
    message = sip(text)
    assert isinstance(message, Response)
    return message


def state_of(dialog: Dialog) -> DialogState:
    """The state, read through a call so that mypy does not keep an earlier assert's narrowing."""
    return dialog.state


def roundtrip(request: Request) -> Request:
    """Serialise and parse again: what we build must be a valid message."""
    parsed = parse_message(bytes(request))
    assert isinstance(parsed, Request)
    return parsed


# RFC 3261 16.12.1.1 (basic SIP trapezoid): the INVITE as the callee receives it, both proxies record-routing.
TRAPEZOID_INVITE = """
INVITE sip:callee@u2.domain.com SIP/2.0
Via: SIP/2.0/UDP p2.domain.com;branch=z9hG4bKp2a1
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1a1
Via: SIP/2.0/UDP u1.example.com;branch=z9hG4bKu1a1
Max-Forwards: 68
From: "The Caller" <sip:caller@example.com>;tag=9fxced76sl
To: <sip:callee@domain.com>
Call-ID: 3848276298220188511@u1.example.com
CSeq: 1 INVITE
Contact: sip:caller@u1.example.com
Record-Route: <sip:p2.domain.com;lr>
Record-Route: <sip:p1.example.com;lr>
Content-Length: 0
"""

# The same call seen by the caller: its INVITE, and the 200 OK with the Record-Route the proxies echoed.
CALLER_INVITE = """
INVITE sip:callee@domain.com SIP/2.0
Via: SIP/2.0/UDP u1.example.com;branch=z9hG4bKu1a1
Max-Forwards: 70
From: "The Caller" <sip:caller@example.com>;tag=9fxced76sl
To: <sip:callee@domain.com>
Call-ID: 3848276298220188511@u1.example.com
CSeq: 1 INVITE
Contact: <sip:caller@u1.example.com>
Proxy-Authorization: Digest username="caller", realm="example.com", nonce="wf84f1ceczx41ae6cbe5aea9c8e88d359", uri="sip:callee@domain.com", response="42ce3cef44b22f50c6a6071bc8"
Content-Length: 0
"""  # noqa: E501


def caller_response(
    status_line: str, *, tag: str = "314159", record_route: bool = True, contact: bool = True
) -> Response:
    rr = "Record-Route: <sip:p2.domain.com;lr>\nRecord-Route: <sip:p1.example.com;lr>\n" if record_route else ""
    ct = "Contact: <sip:callee@u2.domain.com>\n" if contact else ""
    return resp(
        f"""
SIP/2.0 {status_line}
Via: SIP/2.0/UDP u1.example.com;branch=z9hG4bKu1a1;received=192.0.2.101
From: "The Caller" <sip:caller@example.com>;tag=9fxced76sl
To: <sip:callee@domain.com>;tag={tag}
Call-ID: 3848276298220188511@u1.example.com
CSeq: 1 INVITE
{rr}{ct}Content-Length: 0
"""
    )


# SIPp's built-in uac scenario calling us through Kamailio (record_route() adds lr=on and ftag).
KAMAILIO_INVITE = """
INVITE sip:ivr@10.0.0.5:5080 SIP/2.0
Record-Route: <sip:10.0.0.1;lr=on;ftag=12345SIPpTag001>
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK3a1e.1c2f0d02.0
Via: SIP/2.0/UDP 127.0.1.1:5061;received=127.0.0.1;rport=5061;branch=z9hG4bK-12345-1-0
From: sipp <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001
To: service <sip:service@127.0.0.1:5060>
Call-ID: 1-12345@127.0.1.1
CSeq: 1 INVITE
Contact: sip:sipp@127.0.1.1:5061
Max-Forwards: 69
Subject: Performance Test
Content-Length: 0
"""

OUR_VIA = Via("UDP", "u2.domain.com", 5060)


def uas_dialog(text: str = TRAPEZOID_INVITE, **kw: bool) -> Dialog:
    return Dialog.from_uas(req(text), local_tag="314159", local_contact="<sip:callee@u2.domain.com>", **kw)


def in_dialog(method: str, cseq: int, *, extra: str = "", from_tag: str | None = "9fxced76sl") -> Request:
    """A request from the caller inside the trapezoid dialog."""
    tag = "" if from_tag is None else f";tag={from_tag}"
    return req(
        f"""
{method} sip:callee@u2.domain.com SIP/2.0
Via: SIP/2.0/UDP p2.domain.com;branch=z9hG4bKp2b{cseq}
Max-Forwards: 69
From: "The Caller" <sip:caller@example.com>{tag}
To: <sip:callee@domain.com>;tag=314159
Call-ID: 3848276298220188511@u1.example.com
CSeq: {cseq} {method}
{extra}Content-Length: 0
"""
    )


# ---- UAS ----------------------------------------------------------------------------------------------------------


def test_uas_dialog_takes_route_set_in_order_and_contact_as_remote_target() -> None:
    dialog = uas_dialog()
    assert dialog.id == DialogId("3848276298220188511@u1.example.com", "314159", "9fxced76sl")
    assert dialog.route_set == ["<sip:p2.domain.com;lr>", "<sip:p1.example.com;lr>"]
    assert dialog.remote_target == "sip:caller@u1.example.com"
    assert dialog.remote_uri == '"The Caller" <sip:caller@example.com>'
    assert dialog.local_uri == "<sip:callee@domain.com>"
    assert dialog.remote_cseq == 1
    assert dialog.state is DialogState.CONFIRMED
    assert not dialog.is_uac


def test_uas_bye_goes_to_the_remote_target_through_the_loose_route_set() -> None:
    # RFC 3261 16.12.1.1: "BYE sip:caller@u1.example.com SIP/2.0 / Route: <sip:p2.domain.com;lr>,<sip:p1...;lr>"
    dialog = uas_dialog()
    bye = roundtrip(dialog.create_request("BYE", via=OUR_VIA))
    assert bye.method == "BYE" and bye.uri == "sip:caller@u1.example.com"
    assert bye.headers.values("Route") == ["<sip:p2.domain.com;lr>", "<sip:p1.example.com;lr>"]
    assert str(bye.from_) == "<sip:callee@domain.com>;tag=314159"
    assert str(bye.to) == '"The Caller" <sip:caller@example.com>;tag=9fxced76sl'
    assert bye.call_id == "3848276298220188511@u1.example.com"
    assert bye.headers.get("CSeq") == "1 BYE"
    assert bye.headers.get("Max-Forwards") == "70"
    assert "Contact" not in bye.headers
    branch = bye.top_via.branch
    assert branch is not None and branch.startswith("z9hG4bK")
    assert (bye.top_via.host, bye.top_via.port) == ("u2.domain.com", 5060)
    assert OUR_VIA.branch is None  # the caller's Via object is not modified
    assert dialog.next_hop() == SipURI(host="p2.domain.com", params={"lr": None})


def test_local_cseq_increments_for_each_request() -> None:
    dialog = uas_dialog()
    numbers = [roundtrip(dialog.create_request(m, via=OUR_VIA)).cseq.number for m in ("INFO", "INVITE", "BYE")]
    assert numbers == [1, 2, 3]
    assert dialog.local_cseq == 3


def test_target_refresh_request_carries_our_contact_and_the_body() -> None:
    dialog = uas_dialog()
    sdp = b"v=0\r\no=- 1 2 IN IP4 192.0.2.5\r\ns=-\r\n"
    reinvite = roundtrip(
        dialog.create_request(
            "INVITE", via=OUR_VIA, body=sdp, content_type="application/sdp", extra=[("Supported", "timer")]
        )
    )
    assert reinvite.headers.get("Contact") == "<sip:callee@u2.domain.com>"
    assert reinvite.body == sdp and reinvite.content_type == "application/sdp"
    assert reinvite.headers.get("Supported") == "timer"


def test_via_with_a_branch_is_used_as_given() -> None:
    dialog = uas_dialog()
    via = Via("UDP", "u2.domain.com", 5060, {"branch": "z9hG4bKmine", "rport": None})
    assert dialog.create_request("BYE", via=via).top_via.branch == "z9hG4bKmine"


def test_strict_route_set_puts_the_first_route_in_the_request_uri() -> None:
    # RFC 3261 12.2.1.1 example: remote target sip:user@remoteua, route set
    # <sip:proxy1>,<sip:proxy2>,<sip:proxy3;lr>,<sip:proxy4> gives
    # "METHOD sip:proxy1" and "Route: <sip:proxy2>,<sip:proxy3;lr>,<sip:proxy4>,<sip:user@remoteua>".
    invite = TRAPEZOID_INVITE.replace("Contact: sip:caller@u1.example.com", "Contact: <sip:user@remoteua>").replace(
        "Record-Route: <sip:p2.domain.com;lr>\nRecord-Route: <sip:p1.example.com;lr>",
        "Record-Route: <sip:proxy1>,<sip:proxy2>,<sip:proxy3;lr>,<sip:proxy4>",
    )
    dialog = uas_dialog(invite)
    bye = roundtrip(dialog.create_request("BYE", via=OUR_VIA))
    assert bye.uri == "sip:proxy1"
    assert bye.headers.values("Route") == ["<sip:proxy2>", "<sip:proxy3;lr>", "<sip:proxy4>", "<sip:user@remoteua>"]
    assert dialog.next_hop() == SipURI(host="proxy1")


def test_strict_route_drops_parameters_not_allowed_in_a_request_uri() -> None:
    invite = TRAPEZOID_INVITE.replace(
        "Record-Route: <sip:p2.domain.com;lr>\nRecord-Route: <sip:p1.example.com;lr>",
        "Record-Route: <sip:p2.domain.com;transport=tcp;method=INVITE>",
    )
    bye = uas_dialog(invite).create_request("BYE", via=OUR_VIA)
    assert bye.uri == "sip:p2.domain.com;transport=tcp"
    assert bye.headers.values("Route") == ["<sip:caller@u1.example.com>"]


def test_kamailio_lr_on_is_loose_routing() -> None:
    dialog = Dialog.from_uas(req(KAMAILIO_INVITE), local_tag="ivr-7f3a", local_contact="<sip:ivr@10.0.0.5:5080>")
    bye = roundtrip(dialog.create_request("BYE", via=Via("UDP", "10.0.0.5", 5080)))
    assert bye.uri == "sip:sipp@127.0.1.1:5061"
    assert bye.headers.values("Route") == ["<sip:10.0.0.1;lr=on;ftag=12345SIPpTag001>"]
    assert dialog.next_hop().host_port() == ("10.0.0.1", 5060)
    # Display names come back quoted, which RFC 3261 25.1 makes equivalent to SIPp's bare token.
    assert str(bye.to) == '"sipp" <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001'
    assert str(bye.from_) == '"service" <sip:service@127.0.0.1:5060>;tag=ivr-7f3a'


def test_no_route_set_next_hop_is_the_remote_target() -> None:
    dialog = uas_dialog(
        TRAPEZOID_INVITE.replace("Record-Route: <sip:p2.domain.com;lr>\nRecord-Route: <sip:p1.example.com;lr>\n", "")
    )
    bye = dialog.create_request("BYE", via=OUR_VIA)
    assert "Route" not in bye.headers and bye.uri == "sip:caller@u1.example.com"
    assert dialog.next_hop() == SipURI(host="u1.example.com", user="caller")


def test_cseq_lower_than_the_last_one_is_rejected_with_500() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("INFO", 5))
    assert dialog.remote_cseq == 5
    with pytest.raises(DialogError, match=r"RFC 3261 12\.2\.2: CSeq out of order") as info:
        dialog.receive_request(in_dialog("INFO", 4))
    assert info.value.status == 500
    assert dialog.remote_cseq == 5
    # ACK and CANCEL carry an older request's number and are never out of order.
    dialog.receive_request(in_dialog("ACK", 1))
    assert dialog.remote_cseq == 5
    dialog.receive_request(in_dialog("INFO", 6))
    assert dialog.remote_cseq == 6


def test_first_request_sets_an_empty_remote_cseq() -> None:
    dialog = Dialog.from_uac(req(CALLER_INVITE), caller_response("200 OK"))
    assert dialog.remote_cseq is None
    bye = req(
        """
BYE sip:caller@u1.example.com SIP/2.0
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1b1
From: <sip:callee@domain.com>;tag=314159
To: "The Caller" <sip:caller@example.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@u1.example.com
CSeq: 7 BYE
Content-Length: 0
"""
    )
    dialog.receive_request(bye)
    assert dialog.remote_cseq == 7
    assert dialog.state is DialogState.TERMINATED  # RFC 3261 15.1.2


def test_reinvite_contact_refreshes_the_remote_target_but_info_does_not() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("INFO", 2, extra="Contact: <sip:caller@198.51.100.7>\n"))
    assert dialog.remote_target == "sip:caller@u1.example.com"
    dialog.receive_request(in_dialog("INVITE", 3, extra="Contact: <sip:caller@198.51.100.7:5070;transport=tcp>\n"))
    assert dialog.remote_target == "sip:caller@198.51.100.7:5070;transport=tcp"
    assert dialog.create_request("BYE", via=OUR_VIA).uri == "sip:caller@198.51.100.7:5070;transport=tcp"
    dialog.receive_request(in_dialog("UPDATE", 4, extra="Contact: <sip:caller@198.51.100.8>\n"))
    assert dialog.remote_target == "sip:caller@198.51.100.8"


def test_request_of_another_dialog_is_rejected_with_481() -> None:
    dialog = uas_dialog()
    with pytest.raises(DialogError) as info:
        dialog.receive_request(in_dialog("BYE", 2, from_tag="someone-else"))
    assert info.value.status == 481


def test_bye_received_terminates_and_later_requests_get_481() -> None:
    dialog = uas_dialog()
    dialog.receive_request(in_dialog("BYE", 2))
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(DialogError) as info:
        dialog.receive_request(in_dialog("INFO", 3))
    assert info.value.status == 481
    with pytest.raises(DialogError, match="terminated"):
        dialog.create_request("BYE", via=OUR_VIA)


def test_early_uas_dialog_may_not_send_bye_until_confirmed() -> None:
    dialog = uas_dialog(early=True)
    assert dialog.state is DialogState.EARLY
    with pytest.raises(DialogError, match="RFC 3261 15: the callee"):
        dialog.create_request("BYE", via=OUR_VIA)
    assert dialog.local_cseq == 0
    dialog.confirm()
    assert state_of(dialog) is DialogState.CONFIRMED
    assert dialog.create_request("BYE", via=OUR_VIA).cseq.number == 1


def test_confirmed_dialog_cannot_go_back_to_early_or_be_confirmed_after_it_ended() -> None:
    dialog = uas_dialog()
    dialog.confirm()  # already confirmed: nothing happens
    dialog.terminate()
    with pytest.raises(DialogError, match="Terminated dialog cannot become Confirmed"):
        dialog.confirm()


def test_uas_dialog_needs_a_contact_and_no_to_tag() -> None:
    no_contact = TRAPEZOID_INVITE.replace("Contact: sip:caller@u1.example.com\n", "")
    with pytest.raises(DialogError, match=r"8\.1\.1\.8") as info:
        uas_dialog(no_contact)
    assert info.value.status == 400
    with pytest.raises(DialogError, match=r"12\.1\.1"):
        uas_dialog(TRAPEZOID_INVITE.replace("To: <sip:callee@domain.com>", "To: <sip:callee@domain.com>;tag=x"))


def test_ack_and_cancel_are_not_built_by_create_request() -> None:
    dialog = uas_dialog()
    with pytest.raises(DialogError, match="create_ack"):
        dialog.create_request("ACK", via=OUR_VIA)
    with pytest.raises(DialogError, match="make_cancel"):
        dialog.create_request("CANCEL", via=OUR_VIA)
    assert dialog.local_cseq == 0


def test_rfc2543_peer_without_from_tag_has_a_null_remote_tag() -> None:
    invite = TRAPEZOID_INVITE.replace(";tag=9fxced76sl", "")
    dialog = uas_dialog(invite)
    assert dialog.remote_tag == ""
    bye = roundtrip(dialog.create_request("BYE", via=OUR_VIA))
    assert bye.to.tag is None
    incoming = in_dialog("BYE", 2, from_tag=None)
    assert dialog_id_for_request(incoming) == dialog.id
    dialog.receive_request(incoming)
    assert dialog.state is DialogState.TERMINATED


# ---- UAC ----------------------------------------------------------------------------------------------------------


def test_uac_dialog_reverses_the_record_route_and_targets_the_2xx_contact() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("200 OK"))
    assert dialog.is_uac and dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("3848276298220188511@u1.example.com", "9fxced76sl", "314159")
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.domain.com;lr>"]
    assert dialog.remote_target == "sip:callee@u2.domain.com"
    assert dialog.local_cseq == 1 and dialog.remote_cseq is None
    assert dialog.local_contact == "<sip:caller@u1.example.com>"
    # RFC 3261 16.12.1.1: "BYE sip:callee@u2.domain.com SIP/2.0 / Route: <sip:p1.example.com;lr>,<sip:p2...;lr>"
    bye = roundtrip(dialog.create_request("BYE", via=Via("UDP", "u1.example.com")))
    assert bye.uri == "sip:callee@u2.domain.com"
    assert bye.headers.values("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.domain.com;lr>"]
    assert bye.headers.get("CSeq") == "2 BYE"
    assert str(bye.from_) == '"The Caller" <sip:caller@example.com>;tag=9fxced76sl'
    assert str(bye.to) == "<sip:callee@domain.com>;tag=314159"
    assert dialog.next_hop().host == "p1.example.com"


def test_ack_for_2xx_has_the_invite_cseq_a_new_branch_and_the_credentials() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("200 OK"))
    sdp = b"v=0\r\n"
    ack = roundtrip(
        dialog.create_ack(
            invite,
            via=Via("UDP", "u1.example.com", params={"branch": "z9hG4bKu1a1"}),
            body=sdp,
            content_type="application/sdp",
        )
    )
    assert ack.method == "ACK" and ack.uri == "sip:callee@u2.domain.com"
    assert ack.headers.get("CSeq") == "1 ACK"
    branch = ack.top_via.branch
    assert branch is not None and branch.startswith("z9hG4bK") and branch != "z9hG4bKu1a1"
    assert ack.headers.values("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.domain.com;lr>"]
    assert ack.to.tag == "314159" and ack.from_.tag == "9fxced76sl"
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    assert "Contact" not in ack.headers
    assert ack.body == sdp
    assert dialog.local_cseq == 1  # an ACK takes no new CSeq number


def test_ack_can_be_built_after_the_dialog_was_given_up() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("200 OK"))
    dialog.terminate()
    assert dialog.create_ack(invite, via=Via("UDP", "u1.example.com")).method == "ACK"


def test_early_uac_dialog_is_confirmed_by_the_2xx_which_recomputes_the_route_set() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("180 Ringing", record_route=False))
    assert dialog.state is DialogState.EARLY and dialog.route_set == []
    dialog.receive_response(caller_response("200 OK"))
    assert state_of(dialog) is DialogState.CONFIRMED
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.domain.com;lr>"]


def test_provisional_without_contact_falls_back_to_the_request_uri() -> None:
    dialog = Dialog.from_uac(req(CALLER_INVITE), caller_response("183 Session Progress", contact=False))
    assert dialog.remote_target == "sip:callee@domain.com"


def test_non_2xx_final_ends_every_early_dialog() -> None:
    dialog = Dialog.from_uac(req(CALLER_INVITE), caller_response("180 Ringing"))
    dialog.receive_response(caller_response("486 Busy Here", tag="another-fork"))
    assert dialog.state is DialogState.TERMINATED


def test_481_to_an_in_dialog_request_terminates_the_dialog() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("200 OK"))
    info = dialog.create_request("INFO", via=Via("UDP", "u1.example.com"))
    dialog.receive_response(make_response(info, 481))
    assert dialog.state is DialogState.TERMINATED


def test_2xx_to_a_target_refresh_updates_the_remote_target() -> None:
    invite = req(CALLER_INVITE)
    dialog = Dialog.from_uac(invite, caller_response("200 OK"))
    update = dialog.create_request("UPDATE", via=Via("UDP", "u1.example.com"))
    dialog.receive_response(make_response(update, 200, extra=[("Contact", "<sip:callee@203.0.113.9>")]))
    assert dialog.remote_target == "sip:callee@203.0.113.9"
    info = dialog.create_request("INFO", via=Via("UDP", "u1.example.com"))
    dialog.receive_response(make_response(info, 200, extra=[("Contact", "<sip:callee@203.0.113.10>")]))
    assert dialog.remote_target == "sip:callee@203.0.113.9"


def test_response_from_another_fork_is_rejected() -> None:
    dialog = Dialog.from_uac(req(CALLER_INVITE), caller_response("200 OK"))
    with pytest.raises(DialogError) as info:
        dialog.receive_response(caller_response("200 OK", tag="other-fork"))
    assert info.value.status == 481


def test_responses_that_create_no_dialog_are_refused() -> None:
    invite = req(CALLER_INVITE)
    with pytest.raises(DialogError, match=r"12\.1"):
        Dialog.from_uac(invite, caller_response("486 Busy Here"))
    untagged = caller_response("180 Ringing").headers.copy()
    untagged.set("To", "<sip:callee@domain.com>")
    with pytest.raises(DialogError, match=r"12\.1\.2"):
        Dialog.from_uac(invite, Response(180, headers=untagged))


# ---- dialog ids ---------------------------------------------------------------------------------------------------


def test_dialog_id_for_request_is_none_outside_a_dialog() -> None:
    assert dialog_id_for_request(req(TRAPEZOID_INVITE)) is None
    dialog = uas_dialog()
    assert dialog_id_for_request(in_dialog("BYE", 2)) == dialog.id


def test_dialog_id_for_response_is_the_uac_view() -> None:
    dialog = Dialog.from_uac(req(CALLER_INVITE), caller_response("200 OK"))
    assert dialog_id_for_response(caller_response("200 OK")) == dialog.id
    trying = caller_response("100 Trying").headers.copy()
    trying.set("To", "<sip:callee@domain.com>")
    assert dialog_id_for_response(Response(100, headers=trying)) is None
