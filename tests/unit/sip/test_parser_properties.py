"""Property tests for the SIP parser: it never raises anything but SipError, what it accepts is fully usable and
round-trips through ``to_bytes``, generated valid requests parse to exactly what was generated, and the stream framer
reassembles messages however the stream is cut."""

from __future__ import annotations

import contextlib
import string
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ivr.sip.errors import SipError, SipParseError
from ivr.sip.headers import CSeq, Headers, Via, split_list
from ivr.sip.message import Message, Request, Response, StreamFramer, parse_message
from ivr.sip.uri import NameAddr, SipURI, parse_header_params, parse_uri, quote

VECTORS = Path(__file__).parent / "vectors"
SAMPLES = sorted(p.read_bytes() for p in VECTORS.rglob("*.sip"))
VALID_SAMPLES: list[bytes] = []
for _data in SAMPLES:
    try:
        parse_message(_data)
    except SipError:
        continue
    VALID_SAMPLES.append(_data)


def without_length(headers: Headers) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name != "Content-Length"]


def _one_frame(data: bytes) -> bool:
    try:
        return StreamFramer().feed(data) == [data]
    except SipParseError:
        return False


# Valid messages that are exactly one stream frame (a Content-Length, nothing after the body).
STREAM_SAMPLES = [d for d in VALID_SAMPLES if _one_frame(d)]

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_usable(msg: Message) -> None:
    """Every typed accessor works on a message parse_message accepted, and it round-trips through to_bytes."""
    msg.from_, msg.to, msg.cseq, msg.vias, msg.top_via, msg.contacts, msg.call_id  # noqa: B018
    msg.max_forwards, msg.expires, msg.content_type  # noqa: B018
    if isinstance(msg, Request):
        msg.parsed_uri  # noqa: B018
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri, again.version) == (msg.method, msg.uri, msg.version)
    else:
        assert isinstance(again, Response) and isinstance(msg, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)
    assert without_length(again.headers) == without_length(msg.headers)
    assert again.headers.get_all("Content-Length") == [str(len(msg.body))]
    assert again.body == msg.body


def parse_or_error(data: bytes, *, stream: bool = False) -> Message | None:
    try:
        msg = parse_message(data, stream=stream)
    except SipError as exc:
        assert 400 <= exc.status <= 599 and exc.reason
        return None
    assert_usable(msg)
    return msg


# ---- any bytes -----------------------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=3000), st.booleans())
@example(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", False)
@example(b"SIP/2.0 200 OK\r\nMax-Forwards: " + b"1" * 5000 + b"\r\n\r\n", False)
@example(b"\xff\xfe\r\n\r\n", True)
def test_any_bytes_give_a_message_or_a_sip_error(data: bytes, stream: bool) -> None:
    parse_or_error(data, stream=stream)


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A real message (RFC 4475, RFC 3261, SIPp, baresip) with a few random byte-level edits."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup-line", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[i] = draw(st.sampled_from(b"\x00\r\n \t:;,<>\"\\@=%/?x0\x80\xff"))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b" ", b",", b";", b"\"", b"<", b">", b":", b"\r\n ", b"\xc3",
                                              b"9999999999", b"\r\n\r\n", b";;", b"%"]))  # fmt: skip
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif kind == "dup-line":
            start = data.rfind(b"\n", 0, i) + 1
            end = data.find(b"\n", i)
            if end > start:
                data[start:start] = data[start : end + 1]
        else:
            del data[i:]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples(), st.booleans())
def test_mutated_real_messages_give_a_message_or_a_sip_error(data: bytes, stream: bool) -> None:
    parse_or_error(data, stream=stream)


@pytest.mark.parametrize("data", VALID_SAMPLES, ids=range(len(VALID_SAMPLES)))
def test_every_valid_vector_round_trips(data: bytes) -> None:
    msg = parse_message(data)
    assert_usable(msg)


@FAST
@given(st.text(max_size=200))
@example("sip:h:" + "9" * 5000)
@example('"\\')
@example("SIP/2.0/UDP h;rport=" + "9" * 5000)
def test_component_parsers_raise_only_sip_parse_error(text: str) -> None:
    for parse in (SipURI.parse, parse_uri, NameAddr.parse, Via.parse, CSeq.parse, split_list, parse_header_params):
        with contextlib.suppress(SipParseError):
            parse(text)


# ---- generated valid requests ----------------------------------------------------------------------------------------

TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=10)
HEX = "0123456789ABCDEFabcdef"
escaped = st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda t: "%" + t[0] + t[1])
user_part = st.lists(
    st.one_of(st.sampled_from(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"), escaped),
    min_size=1,
    max_size=12,
).map("".join)
label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hosts = st.one_of(
    st.lists(label, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.integers(1, 0xFFFF).map(lambda n: f"[2001:db8::{n:x}]"),
)
ports = st.integers(1, 65535)
param_names = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.!~*'", min_size=1, max_size=8)
param_values = st.one_of(st.none(), st.lists(st.one_of(st.sampled_from(TOKEN), escaped), min_size=1, max_size=8)
                         .map("".join))  # fmt: skip
# qdtext (RFC 3261 25.1) is LWS, printable ASCII and UTF-8 beyond: no control character but HTAB.
CONTROLS = "".join(chr(c) for c in range(0x20) if c != 0x09) + "\x7f"
display_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROLS), max_size=20)
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "REFER", "NOTIFY", "MESSAGE", "UPDATE"]


@dataclass
class GeneratedURI:
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"sip:{user}{self.host}{port}{params}"


sip_uris = st.builds(
    GeneratedURI,
    user=st.one_of(st.none(), user_part),
    host=hosts,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=st.dictionaries(param_names, param_values, max_size=3),
)


@dataclass
class GeneratedAddress:
    display: str | None
    quoted: bool
    uri: GeneratedURI
    params: dict[str, str | None]

    def text(self, fold: bool) -> str:
        if self.display is None:
            head = f"<{self.uri}>"
        else:
            shown = quote(self.display) if self.quoted else self.display
            head = f"{shown}\r\n <{self.uri}>" if fold else f"{shown} <{self.uri}>"
        return head + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())

    def unfolded(self) -> str:
        return self.text(fold=False)


@st.composite
def addresses(draw: st.DrawFn, tag: bool) -> GeneratedAddress:
    quoted = draw(st.booleans())
    if quoted:
        display: str | None = draw(st.one_of(st.none(), display_text))
    else:
        display = draw(st.one_of(st.none(), st.lists(tokens, min_size=1, max_size=3).map(" ".join)))
    params = draw(st.dictionaries(param_names.filter(lambda n: n != "tag"), param_values, max_size=2))
    if tag:
        params["tag"] = draw(tokens)
    return GeneratedAddress(display, quoted, draw(sip_uris), params)


LONG_TO_COMPACT = {"Call-ID": "i", "Contact": "m", "From": "f", "To": "t", "Via": "v", "Content-Length": "l",
                   "Content-Type": "c", "Supported": "k", "Subject": "s"}  # fmt: skip


@dataclass
class GeneratedRequest:
    method: str
    uri: GeneratedURI
    fields: list[tuple[str, str, str]]  # (canonical name, name as written, value as written with folds)
    from_: GeneratedAddress
    to: GeneratedAddress
    vias: list[tuple[str, str, int | None, str]]  # transport, host, port, branch
    cseq: int
    call_id: str
    max_forwards: int
    contacts: list[GeneratedAddress]
    body: bytes

    def wire(self) -> bytes:
        lines = [f"{self.method} {self.uri} SIP/2.0"]
        lines += [f"{written}: {value}" for _, written, value in self.fields]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@st.composite
def valid_requests(draw: st.DrawFn) -> GeneratedRequest:
    method = draw(st.one_of(st.sampled_from(METHODS), tokens))

    def name(canonical: str) -> str:
        style = draw(st.sampled_from(["long", "compact", "lower", "upper"]))
        if style == "compact" and canonical in LONG_TO_COMPACT:
            return draw(st.sampled_from([LONG_TO_COMPACT[canonical], LONG_TO_COMPACT[canonical].upper()]))
        if style == "lower":
            return canonical.lower()
        if style == "upper":
            return canonical.upper()
        return canonical

    def fold(text: str, at: str) -> str:
        """Fold at the first ``at`` (a single blank, so unfolding gives the same value back)."""
        if at in text and draw(st.booleans()):
            return text.replace(at, at.rstrip(" ") + "\r\n" + draw(st.sampled_from([" ", "\t", "   "])), 1)
        return text

    fields: list[tuple[str, str, str, str]] = []  # canonical, written, wire value, unfolded value

    def add(canonical: str, value: str, unfolded: str | None = None) -> None:
        fields.append((canonical, name(canonical), value, value if unfolded is None else unfolded))

    one_via = st.tuples(st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]), hosts, st.one_of(st.none(), ports), tokens)
    vias = draw(st.lists(one_via, min_size=1, max_size=3))
    via_texts = [f"SIP/2.0/{t} {h}{'' if p is None else f':{p}'};branch=z9hG4bK{b}" for t, h, p, b in vias]
    if draw(st.booleans()):
        joined = ", ".join(via_texts)
        add("Via", fold(joined, ", "), joined)
    else:
        for text in via_texts:
            add("Via", text)
    max_forwards = draw(st.integers(0, 255))
    add("Max-Forwards", draw(st.sampled_from(["", "0", "00"])) + str(max_forwards))
    to = draw(addresses(tag=False))
    add("To", to.text(fold=draw(st.booleans())), to.unfolded())
    from_ = draw(addresses(tag=True))
    add("From", from_.text(fold=draw(st.booleans())), from_.unfolded())
    call_id = draw(tokens) + draw(st.sampled_from(["", "@"])) + draw(tokens)
    add("Call-ID", call_id)
    cseq = draw(st.integers(0, 2**31 - 1))
    cseq_text = f"{cseq} {method}"
    add("CSeq", fold(cseq_text, " "), cseq_text)
    contacts = draw(st.lists(addresses(tag=False), max_size=2))
    if contacts:
        joined = ", ".join(c.unfolded() for c in contacts)
        add("Contact", joined)
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)).strip(" \t")
        add("X-" + draw(tokens), value)
    if draw(st.booleans()):
        add("Supported", ", ".join(draw(st.lists(tokens, max_size=3))))
    body = draw(st.binary(max_size=100))
    if body:
        add("Content-Type", "application/octet-stream")
    add("Content-Length", str(len(body)))
    order = draw(st.permutations(range(len(fields))))
    ordered = [fields[i] for i in order]
    # Header order is free, except that separate Via fields keep their order (it is the response path).
    via_slots = [k for k, f in enumerate(ordered) if f[0] == "Via"]
    for slot, via_field in zip(via_slots, [f for f in fields if f[0] == "Via"], strict=True):
        ordered[slot] = via_field
    return GeneratedRequest(
        method=method,
        uri=draw(sip_uris),
        fields=[(c, w, v) for c, w, v, _ in ordered],
        from_=from_,
        to=to,
        vias=vias,
        cseq=cseq,
        call_id=call_id,
        max_forwards=max_forwards,
        contacts=contacts,
        body=body,
    )


def unfolded_fields(gen: GeneratedRequest) -> list[tuple[str, str]]:
    out = []
    for canonical, written, value in gen.fields:
        lines = value.split("\r\n")
        unfolded = lines[0]
        for cont in lines[1:]:
            unfolded = unfolded.rstrip(" \t") + " " + cont.strip(" \t")
        out.append((written if canonical.startswith("X-") else canonical, unfolded))  # unknown names kept as written
    return out


def check_address(parsed: NameAddr, gen: GeneratedAddress) -> None:
    assert parsed.display == gen.display
    assert parsed.params == gen.params
    uri = parsed.uri
    assert isinstance(uri, SipURI)
    check_uri(uri, gen.uri)


def check_uri(uri: SipURI, gen: GeneratedURI) -> None:
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", gen.user, gen.host, gen.port)
    assert uri.params == gen.params
    assert str(uri) == str(gen)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests())
def test_generated_valid_requests_parse_to_what_was_generated(gen: GeneratedRequest) -> None:
    msg = parse_message(gen.wire())
    assert isinstance(msg, Request)
    assert msg.method == gen.method and msg.uri == str(gen.uri)
    parsed_uri = msg.parsed_uri
    assert isinstance(parsed_uri, SipURI)
    check_uri(parsed_uri, gen.uri)
    check_address(msg.from_, gen.from_)
    check_address(msg.to, gen.to)
    assert [(v.transport, v.host, v.port, v.branch) for v in msg.vias] == [
        (t, h, p, f"z9hG4bK{b}") for t, h, p, b in gen.vias
    ]
    assert msg.cseq == CSeq(gen.cseq, gen.method)
    assert msg.call_id == gen.call_id and msg.max_forwards == gen.max_forwards
    assert len(msg.contacts) == len(gen.contacts)
    for parsed, expected in zip(msg.contacts, gen.contacts, strict=True):
        check_address(parsed, expected)
    assert msg.body == gen.body
    assert list(msg.headers) == unfolded_fields(gen)
    assert_usable(msg)
    # Serialising what we parsed gives canonical names, unfolded values, and nothing else changed.
    assert parse_message(msg.to_bytes()).headers == msg.headers


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests(), st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_stream_framer_reassembles_however_the_stream_is_cut(
    first: GeneratedRequest, cuts: list[int], keepalive: bool
) -> None:
    messages = [first.wire(), *STREAM_SAMPLES[:2]]
    stream = (b"\r\n\r\n" if keepalive else b"").join(messages)
    points = sorted({min(c, len(stream)) for c in cuts})
    framer = StreamFramer()
    out: list[bytes] = []
    start = 0
    for point in [*points, len(stream)]:
        out += framer.feed(stream[start:point])
        start = point
    assert out == messages
    for frame in out:
        assert parse_message(frame, stream=True).call_id


def test_stream_framer_split_at_every_byte_boundary_reassembles_identically() -> None:
    assert len(STREAM_SAMPLES) >= 25
    for message in STREAM_SAMPLES[:12]:
        for cut in range(len(message) + 1):
            framer = StreamFramer()
            assert framer.feed(message[:cut]) + framer.feed(message[cut:]) == [message]


GARBAGE_FIRST = bytes(b for b in range(256) if chr(b) not in TOKEN and b not in b"\r\n ")


@FAST
@given(st.sampled_from(GARBAGE_FIRST), st.binary(max_size=200))
def test_stream_framer_rejects_garbage(first: int, rest: bytes) -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(bytes([first]) + rest + b"\r\n\r\n")


@FAST
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_stream_framer_raises_only_sip_parse_error_and_frames_only_what_parses_or_errs(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        frames = [frame for chunk in chunks for frame in framer.feed(chunk)]
    except SipParseError:
        return
    for frame in frames:
        parse_or_error(frame, stream=True)


@FAST
@given(st.lists(st.tuples(st.sampled_from(["To", "t", "X-A", "via", "V"]), st.text(max_size=10)), max_size=6))
def test_headers_accept_only_injection_free_fields(items: list[tuple[str, str]]) -> None:
    assume(all("\r" not in v and "\n" not in v for _, v in items))
    headers = Headers(items)
    assert len(headers) == len(items)
    assert [v for _, v in headers] == [v for _, v in items]
