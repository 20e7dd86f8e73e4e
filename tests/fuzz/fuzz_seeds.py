"""Seed messages for the daemon fuzzer: SIP as real peers write it, as literal text.

The shapes come from the peers the interop suite runs against (tests/interop/scenarios/*.xml, the unit tests of
ivr/sip): SIPp's built-in ``uac`` scenario, baresip (many headers, several codecs), an INVITE forwarded by Kamailio
(Record-Route, a Via stack, P-Asserted-Identity), sippy's B2BUA (G.729 first, h323/cisco headers), and the
in-dialog requests those peers send (ACK, BYE, CANCEL, INFO dtmf-relay, re-INVITE hold, REFER, NOTIFY), plus
OPTIONS keep-alives and a REGISTER.

Placeholders, filled by the fuzzer (``fill``): ``$CALLID $FTAG $TTAG $BRANCH $CSEQ $HOST $PORT $RTP $LEN $BODY``.
``$TTAG`` is the tag the daemon put in its 200 (an in-dialog request), ``$BRANCH`` always starts with the magic
cookie, ``$HOST:$PORT`` is the fuzzer's SIP socket and ``$RTP`` its RTP port.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BODIES", "SEEDS", "Seed", "fill"]


@dataclass(frozen=True, slots=True)
class Seed:
    name: str
    method: str
    text: str  # LF line ends here; sent with CRLF
    in_dialog: bool = False
    body: str | None = None  # the name of a BODIES entry, "" for no body; None: the text has its own


def _t(text: str) -> str:
    return text.strip("\n") + "\n"


# ---- SDP bodies ---------------------------------------------------------------------------------------------------

BODIES: dict[str, str] = {
    "sipp": _t("""
v=0
o=user1 53655765 2353687637 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""),
    "sipp-dtmf": _t("""
v=0
o=sipp 53655765 2353687637 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
"""),
    "baresip": _t("""
v=0
o=- 1823415521 1117236891 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 96 9 0 8 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-mux
a=ssrc:2812362813 cname:6b1c2a9e-1c4b-4f5d-8c7e-2f1e0d9c8b7a
a=sendrecv
a=label:1
"""),
    "sippy": _t("""
v=0
o=Sippy 64553683 0 IN IP4 $HOST
s=-
t=0 0
m=audio $RTP RTP/AVP 18 0 8 101
c=IN IP4 $HOST
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:30
"""),
    "kamailio-rtpengine": _t("""
v=0
o=- 3864871244 3864871244 IN IP4 10.20.30.40
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio $RTP RTP/AVP 8 0 126
c=IN IP4 $HOST
b=TIAS:64000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:126 telephone-event/8000
a=fmtp:126 0-16
a=sendrecv
a=rtcp:$RTP
a=ptime:20
"""),
    "ipv6": _t("""
v=0
o=- 2890844526 2890842807 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::10
t=0 0
m=audio $RTP RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
"""),
    "two-m-lines": _t("""
v=0
o=alice 2890844526 2890844526 IN IP4 $HOST
s=
c=IN IP4 $HOST
t=0 0
m=video 51372 RTP/AVP 31 34
a=rtpmap:31 H261/90000
a=rtpmap:34 H263/90000
m=audio $RTP RTP/AVP 8 0 97
a=rtpmap:97 iLBC/8000
m=audio 0 RTP/AVP 0
m=application 9 UDP/BFCP *
"""),
    "odd-payloads": _t("""
v=0
o=carrier 1 2 IN IP4 $HOST
s=call
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 127 98 0 13 100
a=rtpmap:127 PCMU/8000
a=rtpmap:98 speex/16000
a=rtpmap:13 CN/8000
a=rtpmap:100 telephone-event/8000
a=fmtp:100 0-11,16
a=maxptime:40
a=silenceSupp:off - - - -
"""),
    "srtp": _t("""
v=0
o=- 20518 0 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/SAVP 0 101
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
"""),
    "hold": _t("""
v=0
o=user1 53655765 2353687638 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendonly
"""),
    "hold-rfc2543": _t("""
v=0
o=user1 53655765 2353687639 IN IP4 0.0.0.0
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio $RTP RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""),
    "inactive": _t("""
v=0
o=user1 53655765 2353687640 IN IP4 $HOST
s=-
c=IN IP4 $HOST
t=0 0
m=audio $RTP RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=inactive
"""),
}

_INVITE_BODIES = ("sipp", "sipp-dtmf", "baresip", "sippy", "kamailio-rtpengine", "ipv6", "two-m-lines",
                  "odd-payloads", "srtp", "inactive")  # fmt: skip

# ---- requests -----------------------------------------------------------------------------------------------------

SEEDS: tuple[Seed, ...] = (
    Seed("invite-sipp-uac", "INVITE", _t("""
INVITE sip:2000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Contact: sip:sipp@$HOST:$PORT
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), body="sipp"),
    Seed("invite-baresip", "INVITE", _t("""
INVITE sip:2000@127.0.0.1;transport=udp SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
Contact: <sip:alice-0x55d1@$HOST:$PORT;transport=udp>;+sip.instance="<urn:uuid:8e2b1c9a-51d2-4a6f-9f0b-3f2d0c1b7a11>"
Max-Forwards: 70
To: <sip:2000@127.0.0.1;transport=udp>
From: "Alice" <sip:alice@127.0.0.1>;tag=$FTAG
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported: replaces,norefersub,100rel
User-Agent: baresip v3.10.1 (x86_64/linux)
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), body="baresip"),
    Seed("invite-kamailio", "INVITE", _t("""
INVITE sip:2000@127.0.0.1:5060 SIP/2.0
Record-Route: <sip:$HOST:$PORT;lr;ftag=$FTAG;did=a1b.c2d1>
Record-Route: <sip:10.20.30.1;r2=on;lr;ftag=$FTAG;nat=yes>
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
Via: SIP/2.0/UDP 192.168.1.23:5062;received=198.51.100.7;rport=40112;branch=z9hG4bK-524287-1---6c3f0c7e8d1a2b3c
Max-Forwards: 69
Contact: <sip:0888123456@198.51.100.7:40112;rinstance=6f8d1c2b3a4e5f60;alias=198.51.100.7~40112~1>
To: <sip:2000@pbx.example.com>
From: "Ivan Petrov" <sip:0888123456@pbx.example.com>;tag=$FTAG
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE
Content-Type: application/sdp
P-Asserted-Identity: <sip:+359888123456@pbx.example.com;user=phone>
Diversion: <sip:3000@pbx.example.com>;reason=unconditional;counter=1
Privacy: none
User-Agent: Z 5.4.12 v2.10.13.2-mod
X-Customer: 12345678
Content-Length: $LEN

$BODY"""), body="kamailio-rtpengine"),
    Seed("invite-sippy", "INVITE", _t("""
INVITE sip:2000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;rport;branch=$BRANCH
Max-Forwards: 70
From: "0888123456" <sip:0888123456@$HOST:$PORT>;tag=$FTAG
To: <sip:2000@127.0.0.1:5060>
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Contact: <sip:0888123456@$HOST:$PORT>
Expires: 300
h323-conf-id: 1638519442-3254571690-1424373218-1372937574
cisco-GUID: 1638519442-3254571690-1424373218-1372937574
Server: Sippy
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), body="sippy"),
    Seed("invite-late-offer", "INVITE", _t("""
INVITE sip:2000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: <sip:late@$HOST:$PORT>;tag=$FTAG
To: <sip:2000@127.0.0.1:5060>
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Contact: <sip:late@$HOST:$PORT>
Max-Forwards: 70
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS
Content-Length: 0

"""), body=""),
    Seed("ack", "ACK", _t("""
ACK sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ ACK
Contact: <sip:sipp@$HOST:$PORT>
Max-Forwards: 70
Content-Length: 0

"""), in_dialog=True, body=""),
    Seed("ack-late-answer", "ACK", _t("""
ACK sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: <sip:late@$HOST:$PORT>;tag=$FTAG
To: <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ ACK
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), in_dialog=True, body="sipp-dtmf"),
    Seed("bye", "BYE", _t("""
BYE sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ BYE
Contact: <sip:sipp@$HOST:$PORT>
Max-Forwards: 70
Reason: Q.850;cause=16;text="Normal call clearing"
Content-Length: 0

"""), in_dialog=True, body=""),
    Seed("cancel", "CANCEL", _t("""
CANCEL sip:2000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>
Call-ID: $CALLID
CSeq: $CSEQ CANCEL
Max-Forwards: 70
Content-Length: 0

"""), body=""),
    Seed("options-sipsak", "OPTIONS", _t("""
OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: sip:sipsak@$HOST:$PORT;tag=$FTAG
To: sip:127.0.0.1:5060
Call-ID: $CALLID
CSeq: $CSEQ OPTIONS
Contact: sip:sipsak@$HOST:$PORT
Content-Length: 0
Max-Forwards: 70
User-Agent: sipsak 0.9.8.1
Accept: text/plain

"""), body=""),
    Seed("info-dtmf-relay", "INFO", _t("""
INFO sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ INFO
Contact: <sip:sipp@$HOST:$PORT>
Max-Forwards: 70
Content-Type: application/dtmf-relay
Content-Length: $LEN

Signal=5
Duration=160
"""), in_dialog=True),
    Seed("info-dtmf", "INFO", _t("""
INFO sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: <sip:alice@127.0.0.1>;tag=$FTAG
To: <sip:2000@127.0.0.1;transport=udp>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ INFO
Max-Forwards: 70
Content-Type: application/dtmf
Content-Length: $LEN

#"""), in_dialog=True),
    Seed("reinvite-hold", "INVITE", _t("""
INVITE sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Contact: <sip:sipp@$HOST:$PORT>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), in_dialog=True, body="hold"),
    Seed("reinvite-unhold", "INVITE", _t("""
INVITE sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ INVITE
Contact: <sip:sipp@$HOST:$PORT>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: $LEN

$BODY"""), in_dialog=True, body="sipp-dtmf"),
    Seed("refer", "REFER", _t("""
REFER sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: <sip:alice@127.0.0.1>;tag=$FTAG
To: <sip:2000@127.0.0.1>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ REFER
Contact: <sip:alice@$HOST:$PORT>
Max-Forwards: 70
Refer-To: <sip:3000@pbx.example.com?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>
Referred-By: <sip:alice@127.0.0.1>
Event: refer
Content-Length: 0

"""), in_dialog=True, body=""),
    Seed("notify-refer", "NOTIFY", _t("""
NOTIFY sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
From: <sip:alice@127.0.0.1>;tag=$FTAG
To: <sip:2000@127.0.0.1>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ NOTIFY
Contact: <sip:alice@$HOST:$PORT>
Max-Forwards: 70
Event: refer;id=2
Subscription-State: terminated;reason=noresource
Content-Type: message/sipfrag;version=2.0
Content-Length: $LEN

SIP/2.0 200 OK
"""), in_dialog=True),
    Seed("register", "REGISTER", _t("""
REGISTER sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH;rport
Max-Forwards: 70
From: <sip:alice@127.0.0.1>;tag=$FTAG
To: <sip:alice@127.0.0.1>
Call-ID: $CALLID
CSeq: $CSEQ REGISTER
Contact: <sip:alice@$HOST:$PORT;transport=udp>;expires=3600;+sip.instance="<urn:uuid:8e2b1c9a>"
Expires: 3600
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
User-Agent: baresip v3.10.1 (x86_64/linux)
Authorization: Digest username="alice", realm="ivr", nonce="1700000000.abcdef", uri="sip:127.0.0.1:5060",
 response="00112233445566778899aabbccddeeff", algorithm=MD5
Content-Length: 0

"""), body=""),
    Seed("options-in-dialog", "OPTIONS", _t("""
OPTIONS sip:ivr@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP $HOST:$PORT;branch=$BRANCH
From: sipp <sip:sipp@$HOST:$PORT>;tag=$FTAG
To: 2000 <sip:2000@127.0.0.1:5060>;tag=$TTAG
Call-ID: $CALLID
CSeq: $CSEQ OPTIONS
Max-Forwards: 70
Content-Length: 0

"""), in_dialog=True, body=""),
)

RESPONSE_200_TO_BYE = _t("""
SIP/2.0 200 OK
$VIAS
From: $FROM
To: $TO
Call-ID: $CALLID
CSeq: $CSEQ BYE
Content-Length: 0

""")
"""What the fuzzer answers to the daemon's BYE (its Via, From, To copied as a phone does)."""

INVITE_BODIES = _INVITE_BODIES


def fill(text: str, values: dict[str, str]) -> str:
    """Replace each ``$NAME`` placeholder; ``$LEN`` last, as the body's length in bytes (UTF-8)."""
    body = values.get("BODY", "")
    for name in ("CALLID", "FTAG", "TTAG", "BRANCH", "CSEQ", "HOST", "PORT", "RTP", "VIAS", "FROM", "TO"):
        if name in values:
            text = text.replace("$" + name, values[name])
    if "$BODY" in text:
        body = body.replace("$HOST", values.get("HOST", "127.0.0.1")).replace("$RTP", values.get("RTP", "6000"))
        text = text.replace("$BODY", body)
    head, sep, tail = text.partition("\n\n")
    tail = tail.rstrip("\n") + "\n" if tail.strip() else ""
    length = len(tail.replace("\n", "\r\n").encode())
    return (head + sep + tail).replace("$LEN", str(length))
