"""Store URLs: ``sqlite:///...`` and ``postgresql://...`` parsed into the target a writer opens, and a URL made fit
for logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from ivr.ops.cdr.record import CdrError


@dataclass(frozen=True, slots=True)
class _SqliteTarget:
    path: Path
    synchronous: str
    busy_timeout: float


@dataclass(frozen=True, slots=True)
class _PostgresTarget:
    dsn: str


def _parse_url(url: str) -> _SqliteTarget | _PostgresTarget:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise CdrError(f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        path = unquote(parts.path[1:])
        if path == ":memory:":
            raise CdrError(f"{url!r}: an in-memory database would lose every record; give a file")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise CdrError(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))}; known: synchronous, busy_timeout")
        synchronous = options.get("synchronous", "full").lower()
        if synchronous not in ("off", "normal", "full", "extra"):
            raise CdrError(f"{url!r}: synchronous must be off, normal, full or extra")
        try:
            busy = float(options.get("busy_timeout", "5"))
        except ValueError:
            raise CdrError(f"{url!r}: busy_timeout must be a number of seconds") from None
        return _SqliteTarget(Path(path), synchronous.upper(), busy)
    if scheme in ("postgresql", "postgres"):
        return _PostgresTarget(url)
    raise CdrError(f"{url!r}: unsupported CDR store; use sqlite:///path.db or postgresql://user@host/db")


def display_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
