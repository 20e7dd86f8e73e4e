"""DTMF carried in SIP INFO bodies, sans-I/O.

Two body types are in the wild: ``application/dtmf-relay`` (Cisco's ``Signal=5`` / ``Duration=160`` lines, sent by
most PBXs and SBCs) and ``application/dtmf`` (a bare key). Neither has an RFC; the parsing follows what real peers
send: keys 0-9 * # A-D, ``10``/``11`` for ``*``/``#`` (some gateways), any case, any line ending, extra lines ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.sip.errors import SipError

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
ACCEPTED_INFO_BODIES = (DTMF_RELAY, DTMF)
DEFAULT_DURATION_MS = 100

_KEYS = frozenset("0123456789*#ABCD")
_NUMERIC = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


@dataclass(frozen=True, slots=True)
class InfoDigit:
    key: str
    duration_ms: int


def _key(text: str) -> str | None:
    value = text.strip().upper()
    if value in _KEYS:
        return value
    return _NUMERIC.get(value)


def parse_dtmf_info(content_type: str | None, body: bytes) -> InfoDigit | None:
    """The key an INFO carries; ``None`` for an empty INFO (a keep-alive some peers send).

    Raises :class:`SipError` 415 for a body type we do not understand (the caller adds ``Accept``), 400 for a DTMF
    body without a valid key.
    """
    if not body.strip():
        return None
    if content_type not in ACCEPTED_INFO_BODIES:
        raise SipError(f"INFO body type {content_type} is not understood", status=415)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise SipError("INFO DTMF body is not ASCII") from None
    if content_type == DTMF:
        key = _key(text)
        if key is None:
            raise SipError(f"application/dtmf body {text.strip()[:20]!r} is not a DTMF key")
        return InfoDigit(key, DEFAULT_DURATION_MS)
    fields: dict[str, str] = {}
    for line in text.replace("\r", "\n").split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    signal = fields.get("signal")
    key = _key(signal) if signal is not None else None
    if key is None:
        raise SipError(f"dtmf-relay body has no valid Signal= (got {signal!r})")
    duration_text = fields.get("duration", "")
    duration = int(duration_text) if duration_text.isdigit() and len(duration_text) < 7 else DEFAULT_DURATION_MS
    return InfoDigit(key, duration)
