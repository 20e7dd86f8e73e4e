"""Keeping secrets, sensitive digits and audio out of logs and call records.

Two masks:

* :func:`mask_value` for call records: ``"12345678"`` -> ``"12****78"``. Two characters show at each end only when
  at least half of the value stays hidden, so a 4-digit PIN or a 6-digit code is masked entirely.
* :func:`mask_digits` for logs: every digit becomes ``*``, nothing is revealed (``"acct 1234"`` -> ``"acct ****"``).

:class:`RedactSensitive` is a structlog processor. Add it to the processor chain after ``merge_contextvars`` (so
values bound to the call's context are redacted too) and before the renderer::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        RedactSensitive(),
        ...,
        renderer,
    ])

What it does to every event, at any depth of nested dicts, lists and tuples:

1. **Audio and bytes are dropped**: keys named like audio (``audio``, ``pcm``, ``samples``, ``frames``, ``payload``,
   ...) and any ``bytes``/``bytearray``/``memoryview`` or array (anything with ``dtype`` and ``tobytes``) value.
2. **Secrets are replaced** by ``"[redacted]"``: keys with a secret word as one of their ``_``/``-`` separated parts
   (``password``, ``admin_token``, ``Proxy-Authorization``, ``api_key``, ...). Values that cannot hold a secret stay:
   ``None`` and booleans (``token=True``: a token is configured), and under a ``token`` key a SIP timer's token, a
   timer name or ``(owner id, timer name)`` (``token=(7, "B")`` in "bug: unhandled error in a SIP timer"), the
   names being :data:`TIMER_NAMES`. Any other value of a secret key is redacted, whatever its type.
3. **Sensitive digits are masked** (:func:`mask_digits`) in

   * values wrapped in :class:`Sensitive` (``log.info("collected", digits=Sensitive(entry))``),
   * the fields an event names in ``sensitive_fields=("account", ...)`` (the key itself is removed),
   * the usual input fields (``digits``, ``value``, ``input``, ``entry``, ``text``, ``transcript``, ...) of an event
     logged with ``sensitive=True`` (what a flow node marked ``sensitive: true`` logs).

The ``event`` text itself is left alone: put caller input in fields, not in the message.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

__all__ = [
    "AUDIO_KEYS",
    "INPUT_FIELDS",
    "REDACTED",
    "SECRET_WORDS",
    "TIMER_NAMES",
    "RedactSensitive",
    "Sensitive",
    "mask_digits",
    "mask_value",
    "redact_sensitive",
    "scrub",
]

REDACTED: Final = "[redacted]"

SECRET_WORDS: Final = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "authorization",
        "cookie",
        "credentials",
        "apikey",
        "pin",
        "cvv",
        "cvc",
        "ha1",
    }
)
"""A key is secret when one of its parts (split at ``_``, ``-``, ``.`` and spaces, case-insensitive) is one of these,
or when it is ``api_key`` / ``private_key``."""

_SECRET_PAIRS: Final = frozenset({("api", "key"), ("private", "key"), ("access", "key")})

TIMER_NAMES: Final = frozenset({*"ABDEFGHIJKLM", "2xx", "cancel", "refresh", "retry"})
"""The names of ``ivr.sip``'s timers (the RFC 3261/6026 transaction timers A-M but the proxy's C, and the 2xx and
CANCEL timers of
``ivr.sip.transaction``, the REGISTER client's ``refresh`` and ``retry``): what a timer token holds besides an owner
id. A test checks this set against ``ivr.sip``."""

AUDIO_KEYS: Final = frozenset(
    {"audio", "pcm", "samples", "frames", "frame", "payload", "rtp_payload", "wav", "recording", "raw", "body_bytes"}
)

INPUT_FIELDS: Final = ("digits", "value", "input", "entry", "text", "transcript", "heard", "dtmf", "collected")

_DIGIT = re.compile(r"\d")
_KEY_PARTS = re.compile(r"[_\-.\s]+")
_MAX_DEPTH: Final = 6


def mask_value(value: str, keep: int = 2) -> str:
    """``value`` for a call record: ``keep`` characters show at each end when at least half stay hidden
    (``"12345678"`` -> ``"12****78"``); shorter values are masked entirely (``"1234"`` -> ``"****"``).
    Idempotent: masking a masked value gives it back."""
    length = len(value)
    if keep > 0 and length >= 4 * keep:
        return value[:keep] + "*" * (length - 2 * keep) + value[-keep:]
    return "*" * length


def mask_digits(text: str) -> str:
    """Every digit of ``text`` (any script's) replaced by ``*``; other characters stay."""
    return _DIGIT.sub("*", text)


class Sensitive:
    """A value whose digits must never reach a log line. ``str()`` and ``repr()`` give it masked, so it is safe even
    where the processor does not run; ``.value`` holds the original for code that needs it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def masked(self) -> str:
        return mask_digits(str(self.value))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"Sensitive({self.masked()!r})"


def _is_binary(value: object) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    return hasattr(value, "dtype") and hasattr(value, "tobytes")


class RedactSensitive:
    """The structlog processor (see the module docstring). Word lists can be replaced for a deployment."""

    def __init__(
        self,
        *,
        secret_words: Iterable[str] = SECRET_WORDS,
        audio_keys: Iterable[str] = AUDIO_KEYS,
        input_fields: Iterable[str] = INPUT_FIELDS,
    ) -> None:
        self.secret_words = frozenset(word.lower() for word in secret_words)
        self.audio_keys = frozenset(key.lower() for key in audio_keys)
        self.input_fields = tuple(input_fields)

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        marked: set[str] = set()
        named = event_dict.pop("sensitive_fields", None)
        if isinstance(named, str):
            marked.add(named)
        elif isinstance(named, Iterable):
            marked.update(str(name) for name in named)
        if event_dict.get("sensitive") is True:
            marked.update(self.input_fields)
        for key in list(event_dict):
            if key == "event":
                continue
            value = event_dict[key]
            if self._drop(key, value):
                del event_dict[key]
            elif self._secret(key) and not self._harmless(key, value):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self._clean(value, key in marked, 0)
        return event_dict

    def _harmless(self, key: str, value: object) -> bool:
        """Whether the value of a secret-sounding key cannot be a secret: ``None``, a boolean, or, under a key whose
        only secret word is ``token``, a SIP timer token (a timer name, or an owner id and a timer name)."""
        if value is None or isinstance(value, bool):
            return True
        parts = [part for part in _KEY_PARTS.split(key.lower()) if part]
        if {part for part in parts if part in self.secret_words} != {"token"}:
            return False
        if any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts)):
            return False
        if isinstance(value, str):
            return value in TIMER_NAMES
        if isinstance(value, tuple | list) and len(value) == 2:
            owner, name = value
            return type(owner) is int and isinstance(name, str) and name in TIMER_NAMES
        return False

    def _secret(self, key: str) -> bool:
        parts = [part for part in _KEY_PARTS.split(key.lower()) if part]
        if any(part in self.secret_words for part in parts):
            return True
        return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))

    def _drop(self, key: object, value: object) -> bool:
        return (isinstance(key, str) and key.lower() in self.audio_keys) or _is_binary(value)

    def _clean(self, value: object, mask: bool, depth: int) -> object:
        if isinstance(value, Sensitive):
            return value.masked()
        if isinstance(value, str):
            return mask_digits(value) if mask else value
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return mask_digits(str(value)) if mask else value
        if depth >= _MAX_DEPTH:
            return value
        if isinstance(value, Mapping):
            cleaned: dict[object, object] = {}
            for key, item in value.items():
                if self._drop(key, item):
                    continue
                if isinstance(key, str) and self._secret(key) and not self._harmless(key, item):
                    cleaned[key] = REDACTED
                else:
                    cleaned[key] = self._clean(item, mask, depth + 1)
            return cleaned
        if isinstance(value, list | tuple):
            items = [self._clean(item, mask, depth + 1) for item in value if not _is_binary(item)]
            return items if isinstance(value, list) else tuple(items)
        return value


redact_sensitive: Final = RedactSensitive()
"""The processor with the default word lists, ready for ``structlog.configure(processors=[...])``."""


def scrub(value: object) -> object:
    """``value`` (nested dicts, lists, tuples) without audio or bytes and with secret keys redacted, for JSON that
    leaves the process (a call record's ``handoff`` and ``extra``). Digits are left alone: mask them where they are
    known to be sensitive (:func:`mask_value`)."""
    return redact_sensitive._clean(value, False, 0)
