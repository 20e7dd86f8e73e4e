"""A structure-aware mutator for SIP messages, deterministic from a ``random.Random``.

A message is cut into its start line, its header fields (name, value) and its body; a mutation works on that
structure (drop, duplicate, reorder header fields; take a value from another message; numbers made huge, negative
or empty; URIs turned into other schemes, ``*``, IPv6, names, long or UTF-8 strings, control bytes; Content-Length
broken; the SDP's lines changed or its bits flipped; Call-ID, tags and branches swapped for those of dialogs and
transactions the fuzzer has open, so that some messages land in them), and a few mutations work on the bytes
(truncation, bit flips, junk inserted, a range deleted or doubled).

Everything is text in ISO-8859-1 inside (one character per byte), so arbitrary bytes survive the round trip.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Message", "Mutator", "Pool", "choose_count"]

HUGE_NUMBERS = ("4294967296", "18446744073709551616", "9" * 40, "-1", "-2147483649", "0", "", " ", "1e9", "0x10",
                "00000000000000000000001", "1.5", "+1", "2147483647", "65536", "NaN")  # fmt: skip
URIS = (
    "tel:+359888123456", "tel:+1-555-0100;phone-context=example.com", "*", "sips:2000@127.0.0.1:5061",
    "sip:[2001:db8::1]:5060", "sip:[::1]", "sip:2000@[fe80::1%25eth0]", "mailto:a@b.c", "urn:service:sos",
    "sip:2000@pbx.example.com", "sip:%32%30%30%30@127.0.0.1", "sip:2000@127.0.0.1:0", "sip:2000@127.0.0.1:99999",
    "sip:2000@127.0.0.1;transport=tcp", "sip:2000@127.0.0.1;maddr=239.255.255.1;ttl=15", "sip:@127.0.0.1",
    "sip:2000@", "sip:", "<sip:2000@127.0.0.1>", "sip:user:password@127.0.0.1", "SIP:2000@127.0.0.1",
    "sip:2000@127.0.0.1?Subject=hi&Call-ID=x", "http://127.0.0.1/", "sip:2000;lr@127.0.0.1",
    "sip:" + "9" * 300 + "@127.0.0.1", "sip:" + "a." * 200 + "com",
)  # fmt: skip
STRINGS = (
    "", " ", "\t", "a" * 5000, "A" * 70000, "Иван Петров", "💥📞", "\u202e", "\ufeff", "\x00", "\x7f", "\x1b[31m",
    "\r", "\n", "\r\n", "\r\n ", "\r\n\r\n", "%00", "%", ";", ",", "<", ">", '"', '"unterminated', "\\", "\\\"",
    "=", ";;;", ";tag=", ";tag", ";branch=", ";received=1.2.3.4;rport=70000", "\xff\xfe", "\xc3\x28",
)  # fmt: skip
COMPACT = {"call-id": "i", "from": "f", "to": "t", "via": "v", "content-type": "c", "content-length": "l",
           "contact": "m", "supported": "k", "subject": "s", "event": "o", "refer-to": "r"}  # fmt: skip
EXTRA_HEADERS = (
    ("Require", "100rel"), ("Require", "timer, replaces"), ("Proxy-Require", "foo"), ("Supported", "timer"),
    ("Session-Expires", "1800;refresher=uac"), ("Min-SE", "90"), ("Route", "<sip:127.0.0.1:5060;lr>"),
    ("Route", "<sip:10.9.9.9;lr>"), ("Record-Route", "<sip:127.0.0.1:5070;lr>"), ("Max-Forwards", "0"),
    ("Content-Encoding", "gzip"), ("Content-Disposition", "session;handling=required"),
    ("Accept", "application/sdp"), ("Expires", "0"), ("Retry-After", "5"), ("Replaces", "x@y;to-tag=1;from-tag=2"),
    ("Authorization", 'Digest username="u", realm="ivr", nonce="n", uri="sip:x", response="r"'),
    ("Proxy-Authorization", 'Digest username="a"'), ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
    ("Date", "Thu, 21 Feb 2002 13:02:03 PST"), ("Timestamp", "54"), ("Priority", "emergency"),
    ("User-to-User", "3030303030;encoding=hex"), ("X-IVR-Account", "12345678"), ("P-Asserted-Identity", "tel:+1"),
    ("Content-Type", "multipart/mixed;boundary=unique"), ("Content-Type", "application/sdp"), ("CSeq", "1 INVITE"),
    ("Via", "SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKextra"), ("Via", "SIP/2.0/UDP [2001:db8::9];branch=z9hG4bK6"),
    ("Contact", "*"), ("Contact", "<tel:+15550100>"), ("Contact", "<sip:a@1.2.3.4>, <sip:b@1.2.3.4>"),
)  # fmt: skip
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REFER", "NOTIFY", "REGISTER", "UPDATE", "PRACK",
           "SUBSCRIBE", "MESSAGE", "PUBLISH", "invite", "FOO", "INVITE ", "")  # fmt: skip
SDP_LINES = (
    "m=audio 0 RTP/AVP 0", "m=audio 65536 RTP/AVP 0", "m=audio -1 RTP/AVP 0", "m=audio 6000 RTP/AVP 128",
    "m=audio 6000 RTP/AVP", "m=audio 6000/2 RTP/AVP 0", "m=audio 6000 UDP/TLS/RTP/SAVPF 0 8",
    "m=audio 6000 RTP/AVP 96", "m=video 6002 RTP/AVP 31", "m=image 6004 udptl t38",
    "c=IN IP4 0.0.0.0", "c=IN IP6 ::1", "c=IN IP4 pbx.example.com", "c=IN IP4 224.2.1.1/127/3", "c=IN IP4",
    "c=IN IP4 999.1.1.1", "c=IN IP6 127.0.0.1", "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv",
    "a=rtpmap:0 PCMU/16000", "a=rtpmap:101 telephone-event/8000", "a=rtpmap:96 PCMU/8000", "a=rtpmap:0",
    "a=rtpmap:x y", "a=fmtp:101 0-15", "a=ptime:0", "a=ptime:-20", "a=ptime:100000", "a=maxptime:",
    "o=- 1 1 IN IP4 127.0.0.1", "v=1", "s=", "t=0", "b=AS:-5", "x=unknown", "a=rtcp:9 IN IP4 0.0.0.0", "a=",
    "k=clear:secret", "a=mid:audio", "a=group:BUNDLE audio video", "a=ice-ufrag:ab", "a=setup:actpass",
)  # fmt: skip


@dataclass
class Message:
    """A message cut at its structure. ``start`` has no line end; ``headers`` are (name, value) without the colon;
    ``body`` is everything after the empty line. ``sep`` is the line end used."""

    start: str
    headers: list[tuple[str, str]]
    body: str
    sep: str = "\r\n"

    @classmethod
    def parse(cls, data: bytes) -> Message:
        text = data.decode("latin-1")
        sep = "\r\n" if "\r\n" in text else "\n"
        head, _, body = text.partition(sep + sep)
        lines = head.split(sep)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers.append((name.strip(), value.strip()))
            elif headers and line[:1] in (" ", "\t"):  # folded
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            else:
                headers.append((line, ""))
        return cls(lines[0], headers, body, sep)

    def to_bytes(self, *, content_length: bool = False) -> bytes:
        """``content_length``: rewrite Content-Length to the body's length (for structural changes that should not
        also break the framing)."""
        headers = self.headers
        if content_length:
            size = str(len(self.body.encode("latin-1")))
            headers = [(n, size) if n.lower() in ("content-length", "l") else (n, v) for n, v in headers]
        lines = [self.start, *(f"{n}: {v}" if v or n else "" for n, v in headers)]
        return (self.sep.join(lines) + self.sep + self.sep + self.body).encode("latin-1")

    def indexes(self, name: str) -> list[int]:
        wanted = {name.lower(), COMPACT.get(name.lower(), name.lower())}
        return [i for i, (n, _) in enumerate(self.headers) if n.lower() in wanted]

    def get(self, name: str) -> str | None:
        found = self.indexes(name)
        return self.headers[found[0]][1] if found else None


@dataclass
class Pool:
    """Values seen in this session, for mutations that make a message collide with existing dialogs and
    transactions: Call-IDs, tags (ours and the daemon's), branches, whole header values by name."""

    call_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 64

    def add(self, kind: list[str], value: str) -> None:
        if value and value not in kind[-8:]:
            kind.append(value)
            if len(kind) > self.limit:
                del kind[: len(kind) - self.limit]

    def learn(self, msg: Message) -> None:
        for name, value in msg.headers:
            key = name.lower()
            bucket = self.values.setdefault(key, [])
            if len(bucket) < self.limit:
                bucket.append(value)
            elif value not in bucket:
                bucket[hash(value) % self.limit] = value


Mutation = Callable[[random.Random, Message, Pool], Message | bytes]


class Mutator:
    """``mutate(data, rng, pool, count)`` applies ``count`` mutations chosen by ``rng``; returns the bytes to send
    and the names of the mutations applied."""

    def __init__(self) -> None:
        self.structural: list[tuple[str, Mutation, int]] = [
            ("drop_header", _drop_header, 6),
            ("duplicate_header", _duplicate_header, 4),
            ("reorder_headers", _reorder_headers, 3),
            ("swap_value", _swap_value, 5),
            ("mutate_value", _mutate_value, 10),
            ("content_length", _content_length, 4),
            ("sdp_line", _sdp_line, 6),
            ("sdp_bitflip", _sdp_bitflip, 2),
            ("ids", _ids, 8),
            ("start_line", _start_line, 4),
            ("add_header", _add_header, 4),
            ("header_name", _header_name, 3),
            ("body_swap", _body_swap, 2),
        ]
        self.bytewise: list[tuple[str, Callable[[random.Random, bytes], bytes], int]] = [
            ("truncate", _truncate, 3),
            ("bitflip", _bitflip, 2),
            ("insert_junk", _insert_junk, 1),
            ("delete_range", _delete_range, 1),
            ("double_range", _double_range, 1),
        ]
        self._s_weights = [w for _, _, w in self.structural]
        self._b_weights = [w for _, _, w in self.bytewise]

    def mutate(self, data: bytes, rng: random.Random, pool: Pool, count: int = 1) -> tuple[bytes, list[str]]:
        applied: list[str] = []
        msg = Message.parse(data)
        fix_length = rng.random() < 0.7  # most structural mutations keep the framing right
        raw: bytes | None = None
        for _ in range(count):
            if raw is None and rng.random() < 0.88:
                name, fn, _w = rng.choices(self.structural, self._s_weights)[0]
                result = fn(rng, msg, pool)
                applied.append(name)
                if isinstance(result, bytes):
                    raw = result
                else:
                    msg = result
                    if name == "content_length":
                        fix_length = False
            else:
                if raw is None:
                    raw = msg.to_bytes(content_length=fix_length)
                bname, bfn, _bw = rng.choices(self.bytewise, self._b_weights)[0]
                raw = bfn(rng, raw)
                applied.append(bname)
        if raw is None:
            raw = msg.to_bytes(content_length=fix_length)
        return raw, applied


# ---- structural mutations -----------------------------------------------------------------------------------------


def _pick(rng: random.Random, msg: Message) -> int | None:
    return rng.randrange(len(msg.headers)) if msg.headers else None


def _drop_header(rng: random.Random, msg: Message, pool: Pool) -> Message:
    i = _pick(rng, msg)
    if i is not None:
        del msg.headers[i]
    return msg


def _duplicate_header(rng: random.Random, msg: Message, pool: Pool) -> Message:
    i = _pick(rng, msg)
    if i is not None:
        msg.headers.insert(rng.randrange(len(msg.headers) + 1), msg.headers[i])
    return msg


def _reorder_headers(rng: random.Random, msg: Message, pool: Pool) -> Message:
    if len(msg.headers) > 1:
        if rng.random() < 0.3:
            rng.shuffle(msg.headers)
        else:
            i, j = rng.randrange(len(msg.headers)), rng.randrange(len(msg.headers))
            msg.headers[i], msg.headers[j] = msg.headers[j], msg.headers[i]
    return msg


def _swap_value(rng: random.Random, msg: Message, pool: Pool) -> Message:
    """A header's value taken from another message of the session (same name, or any name)."""
    i = _pick(rng, msg)
    if i is None:
        return msg
    name = msg.headers[i][0]
    bucket = pool.values.get(name.lower())
    if not bucket or rng.random() < 0.2:
        names = sorted(pool.values)
        if not names:
            return msg
        bucket = pool.values[rng.choice(names)]
    if bucket:
        msg.headers[i] = (name, rng.choice(bucket))
    return msg


def _number(rng: random.Random, value: str) -> str:
    digits = [k for k, c in enumerate(value) if c.isdigit()]
    if not digits:
        return rng.choice(HUGE_NUMBERS)
    start = rng.choice(digits)
    end = start
    while end < len(value) and value[end].isdigit():
        end += 1
    while start > 0 and value[start - 1].isdigit():
        start -= 1
    return value[:start] + rng.choice(HUGE_NUMBERS) + value[end:]


def _uri(rng: random.Random, value: str) -> str:
    lt, gt = value.find("<"), value.find(">")
    new = rng.choice(URIS)
    if 0 <= lt < gt:
        return value[: lt + 1] + new.strip("<>") + value[gt:]
    semi = value.find(";")
    return new + (value[semi:] if semi >= 0 and rng.random() < 0.5 else "")


def _string(rng: random.Random, value: str) -> str:
    junk = rng.choice(STRINGS).encode("utf-8", "surrogatepass").decode("latin-1")
    where = rng.randrange(len(value) + 1)
    mode = rng.random()
    if mode < 0.4:
        return value[:where] + junk + value[where:]
    if mode < 0.7:
        return junk
    return value + junk


def _param(rng: random.Random, value: str) -> str:
    params = (";tag=", ";branch=z9hG4bK", ";branch=", ";rport", ";rport=0", ";received=::1", ";lr", ";expires=-1",
              ";maddr=", ";transport=sctp", ";tag=a;tag=b", ";=", ";" + "p" * 1000 + "=1", ";q=1.5",
              ";ttl=256")  # fmt: skip
    return value + rng.choice(params)


def _mutate_value(rng: random.Random, msg: Message, pool: Pool) -> Message:
    i = _pick(rng, msg)
    if i is None:
        return msg
    name, value = msg.headers[i]
    kind = rng.random()
    if kind < 0.3:
        value = _number(rng, value)
    elif kind < 0.5:
        value = _uri(rng, value)
    elif kind < 0.8:
        value = _string(rng, value)
    else:
        value = _param(rng, value)
    msg.headers[i] = (name, value)
    return msg


def _content_length(rng: random.Random, msg: Message, pool: Pool) -> Message:
    size = len(msg.body.encode("latin-1"))
    choice = rng.choice(
        [str(size + 1), str(size + 1000), str(max(0, size - 1)), "0", "-1", "abc", "", str(2**64), "70000",
         f"{size}, {size}", " " + str(size), str(size) + " ", "0x10"]
    )  # fmt: skip
    found = msg.indexes("Content-Length")
    mode = rng.random()
    if found and mode < 0.15:
        del msg.headers[found[0]]
    elif found and mode < 0.3:
        msg.headers.insert(rng.randrange(len(msg.headers) + 1), ("Content-Length", choice))
    elif found:
        msg.headers[found[0]] = (msg.headers[found[0]][0], choice)
    else:
        msg.headers.append(("Content-Length", choice))
    return msg


def _sdp_lines(msg: Message) -> list[str]:
    return msg.body.replace("\r\n", "\n").split("\n")


def _sdp_line(rng: random.Random, msg: Message, pool: Pool) -> Message:
    lines = [line for line in _sdp_lines(msg) if line] or ["v=0"]
    mode = rng.random()
    i = rng.randrange(len(lines))
    if mode < 0.25:
        del lines[i]
    elif mode < 0.4:
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif mode < 0.7:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(SDP_LINES))
    elif mode < 0.85:
        lines[i] = rng.choice(SDP_LINES)
    else:
        kind, eq, value = lines[i].partition("=")
        lines[i] = kind + eq + (_number(rng, value) if rng.random() < 0.6 else _string(rng, value))
    msg.body = "\r\n".join(lines) + "\r\n"
    return msg


def _sdp_bitflip(rng: random.Random, msg: Message, pool: Pool) -> Message:
    if not msg.body:
        return msg
    data = bytearray(msg.body.encode("latin-1"))
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    msg.body = data.decode("latin-1")
    return msg


def _ids(rng: random.Random, msg: Message, pool: Pool) -> Message:
    """Call-ID, a tag or the branch replaced: by one of an existing dialog or transaction (so the message lands in
    it), by a fresh or a strange one."""
    target = rng.choice(("Call-ID", "From", "To", "Via", "CSeq"))
    found = msg.indexes(target)
    if not found:
        return msg
    i = found[0]
    name, value = msg.headers[i]
    weird = ("", "x" * 300, "z9hG4bK", "z9hG4bK" + "a" * 5000, "ä", "a b", "@", "1@[::1]", "\x01")
    if target == "Call-ID":
        choices = pool.call_ids
        value = rng.choice(choices) if choices and rng.random() < 0.7 else rng.choice(weird)
    elif target in ("From", "To"):
        tag = rng.choice(pool.tags) if pool.tags and rng.random() < 0.7 else rng.choice(weird)
        base = value.split(";tag=")[0]
        value = base if rng.random() < 0.2 else f"{base};tag={tag}"
    elif target == "Via":
        branch = rng.choice(pool.branches) if pool.branches and rng.random() < 0.7 else rng.choice(weird)
        base = value.split(";branch=")[0]
        value = base if rng.random() < 0.15 else f"{base};branch={branch}"
    else:
        number = value.partition(" ")[0]
        value = f"{_number(rng, number) if rng.random() < 0.5 else number} {rng.choice(METHODS)}"
    msg.headers[i] = (name, value)
    return msg


def _start_line(rng: random.Random, msg: Message, pool: Pool) -> Message:
    parts = msg.start.split(" ")
    mode = rng.random()
    if len(parts) >= 3 and mode < 0.35:
        parts[0] = rng.choice(METHODS)
    elif len(parts) >= 3 and mode < 0.7:
        parts[1] = rng.choice(URIS).strip("<>")
    elif len(parts) >= 3 and mode < 0.8:
        parts[-1] = rng.choice(("SIP/3.0", "SIP/2.00", "sip/2.0", "HTTP/1.1", "SIP/2", ""))
    elif mode < 0.9:
        return Message(msg.start.replace(" ", rng.choice(("  ", "\t", ""))), msg.headers, msg.body, msg.sep)
    else:
        parts.insert(rng.randrange(len(parts) + 1), _string(rng, ""))
    msg.start = " ".join(parts)
    return msg


def _add_header(rng: random.Random, msg: Message, pool: Pool) -> Message:
    msg.headers.insert(rng.randrange(len(msg.headers) + 1), rng.choice(EXTRA_HEADERS))
    return msg


def _header_name(rng: random.Random, msg: Message, pool: Pool) -> Message:
    i = _pick(rng, msg)
    if i is None:
        return msg
    name, value = msg.headers[i]
    mode = rng.random()
    if mode < 0.4:
        name = COMPACT.get(name.lower(), name.upper())
    elif mode < 0.6:
        name = name.swapcase()
    elif mode < 0.8:
        name = name + rng.choice((" ", "\t", "  "))
    else:
        name = rng.choice(("", " ", "X-" + "h" * 200, "Via:", "Call ID", "\x00", "Ü"))
    msg.headers[i] = (name, value)
    return msg


def _body_swap(rng: random.Random, msg: Message, pool: Pool) -> Message:
    from tests.fuzz.fuzz_seeds import BODIES

    body = BODIES[rng.choice(sorted(BODIES))].replace("$HOST", "127.0.0.1").replace("$RTP", "6000")
    msg.body = body.replace("\n", "\r\n") if rng.random() < 0.8 else body
    return msg


# ---- byte-level mutations -----------------------------------------------------------------------------------------


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def _bitflip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _insert_junk(rng: random.Random, data: bytes) -> bytes:
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    where = rng.randrange(len(data) + 1)
    return data[:where] + junk + data[where:]


def _delete_range(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 64))
    return data[:a] + data[b:]


def _double_range(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 64))
    return data[:b] + data[a:b] + data[b:]


def choose_count(rng: random.Random, weights: Sequence[int] = (50, 30, 13, 7)) -> int:
    """How many mutations one message gets: 1 mostly, up to 4."""
    return rng.choices(range(1, len(weights) + 1), weights)[0]
