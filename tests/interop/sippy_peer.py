"""sippy (PyPI ``sippy``, https://github.com/sippy/b2bua), a full RFC 3261 B2BUA, as a real peer on loopback.

sippy installs a top-level ``tests`` package (it would shadow ours), so it never goes into the interpreter that
runs the test suite: :func:`sippy_python` builds a virtualenv of its own (``/tmp/sippy-venv`` by default,
``IVR_SIPPY_VENV`` to move it), once, under a file lock (parallel workers wait for the first one), and every later
run reuses it. Without network (no PyPI) it raises :class:`SippyUnavailable` with pip's own words, so a test can
skip with the reason.

Facts about sippy 2.5.0 the code below relies on (read in its source, checked on the wire):

- ``python -m sippy.b2bua_simple -f -l ADDR -p PORT -n HOST:PORT``: every INVITE it receives becomes a new
  INVITE from sippy to ``HOST:PORT`` with the same user part, SDP body and caller; *no other header* of the
  incoming INVITE is carried over (its UAS side hands the B2B core only Call-ID, caller, callee, body, auth and
  display name: ``UasStateIdle``). It answers OPTIONS and everything but INVITE/REGISTER/NOTIFY with 501.
- ``python -m sippy.b2bua -f -u -A 0 -s HOST:PORT -h NAMES ...`` (the full B2BUA, here with no RADIUS auth or
  accounting and one static route) copies the headers named by ``-h``/``--pass_header`` from the incoming INVITE
  onto the outgoing one. It compares names with ``==`` against its own parse, which lower-cases them, so only
  lower-case names match (``-h X-IVR-Account`` passes nothing): :class:`SippyB2bua` lower-cases them for you.
  A passed header keeps its value byte for byte; its name is re-cased with ``str.capitalize`` on the way out
  (``X-ivr-account``, ``User-to-user``), which RFC 3261 7.3.1 allows (header names are case-insensitive).
- Neither relays RTP without an rtpproxy (a separate program): the SDP goes through unchanged, so the media
  flows between the two outer parties directly.
- Its own Contact carries a display name (``Contact: Anonymous <sip:0888123456@127.0.0.1:PORT>``, valid SIP; SIPp's
  ``[next_url]`` copies the display name into a Request-URI, which sippy then cannot parse).
- It cannot send an in-dialog request to a Contact with ``;transport=UDP`` in upper case (what SIPp's
  ``[transport]`` writes): the BYE it should relay dies with ``RuntimeError: BUG: newTransaction() to unsupported
  transport: UDP`` (a sippy bug: URI parameter values compare case-insensitively, RFC 3261 19.1.4).
- ``SIPLOG_LVL=DBUG`` makes it log every SIP message it sends and receives to stderr, and ``-f`` keeps it in the
  foreground; SIGTERM ends it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from tests.interop.peers import (
    LOCALHOST,
    PeerError,
    PeerProcess,
    WorkDir,
    _end_process,
    _read,
    _spawn,
    _tail,
    free_udp_port,
    sip_options_ping,
)

__all__ = ["SIPPY_SPEC", "SippyB2bua", "SippyUnavailable", "header_lines", "sippy_python"]

SIPPY_SPEC = os.environ.get("IVR_SIPPY_SPEC", "sippy==2.5.0")
SIPPY_VENV = Path(os.environ.get("IVR_SIPPY_VENV", "/tmp/sippy-venv"))


class SippyUnavailable(RuntimeError):
    """sippy could not be installed here (no network, no PyPI): a reason to skip, not a failure."""


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _works(python: Path, spec: str) -> bool:
    if not python.exists():
        return False
    version = spec.partition("==")[2]
    probe = "import sippy.b2bua, sippy.b2bua_simple, importlib.metadata as m; print(m.version('sippy'))"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and (not version or done.stdout.strip() == version)


def sippy_python(venv: Path = SIPPY_VENV, spec: str = SIPPY_SPEC, timeout: float = 240.0) -> Path:
    """The python of a virtualenv with ``spec`` installed: reused when it works, else (re)built within ``timeout``.

    Raises :class:`SippyUnavailable` when the virtualenv cannot be built or pip cannot install sippy.
    """
    python = _venv_python(venv)
    if _works(python, spec):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it: wait, then look again
        if _works(python, spec):
            return python
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet",
             "--retries", "1", "--timeout", "15", spec],
        ]  # fmt: skip
        for argv in steps:
            left = deadline - time.monotonic()
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=max(left, 1.0), check=False)
            except subprocess.TimeoutExpired:
                raise SippyUnavailable(f"{' '.join(argv[:4])} ...: took longer than {timeout:g}s") from None
            except OSError as exc:
                raise SippyUnavailable(f"{' '.join(argv[:4])} ...: {exc}") from None
            if done.returncode != 0:
                raise SippyUnavailable(
                    f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{_tail(done.stdout + done.stderr, 8)}"
                )
        if not _works(python, spec):
            raise SippyUnavailable(f"{spec} installed in {venv} but `import sippy.b2bua` fails")
    return python


class SippyB2bua(PeerProcess):
    """sippy's B2BUA on ``127.0.0.1:<free port>`` sending every call on to ``next_hop`` (``host:port``).

    ``pass_headers=None`` runs ``sippy.b2bua_simple`` (no way to pass headers); a list runs the full
    ``sippy.b2bua`` with those headers passed from the incoming INVITE to the outgoing one. Ready once it answers
    an OPTIONS (with 501: neither handles OPTIONS, which is all we need to know it listens). ``log`` is its
    SIP trace (stderr, ``SIPLOG_LVL=DBUG``).
    """

    stderr_file = "sippy.err"

    def __init__(
        self,
        python: Path,
        next_hop: str,
        *,
        pass_headers: Sequence[str] | None = None,
        ready_timeout: float = 15.0,
        lifetime: float = 300.0,
    ) -> None:
        self.python = python
        self.next_hop = next_hop
        self.pass_headers = None if pass_headers is None else [name.lower() for name in pass_headers]
        self.ready_timeout = ready_timeout
        self.lifetime = lifetime
        self.host = LOCALHOST
        self.port = 0
        self._tmp: WorkDir | None = None
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    @property
    def sip_target(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        assert self.workdir is not None
        if self.pass_headers is None:
            return [str(self.python), "-m", "sippy.b2bua_simple", "-f", "-l", self.host, "-p", str(self.port),
                    "-n", self.next_hop]  # fmt: skip
        argv = [
            str(self.python), "-m", "sippy.b2bua", "-f",
            "-u", "-A", "0",  # no RADIUS: no authentication, no accounting
            "-l", self.host, "-p", str(self.port), "-s", self.next_hop,
            "-c", str(self.workdir / "b2bua.sock"), "-P", str(self.workdir / "b2bua.pid"),
            "-L", str(self.workdir / "b2bua.log"),
        ]  # fmt: skip
        if self.pass_headers:
            argv += ["-h", ",".join(self.pass_headers)]
        return argv

    def start(self) -> Self:
        self._tmp = WorkDir("sippy-")
        self.workdir = self._tmp.path
        self.port = free_udp_port(self.host)
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(SIPLOG_LVL="DBUG", SIPLOG_BEND="stderr", PYTHONUNBUFFERED="1")
        self.proc = _spawn(self.command(), workdir=self.workdir, name="sippy", lifetime=self.lifetime, env=env)
        deadline = time.monotonic() + self.ready_timeout
        while sip_options_ping(self.host, self.port, timeout=0.5) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"sippy did not answer OPTIONS on {self.sip_target}\n{self.describe()}")
        return self

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None:
            rc = _end_process(self.proc, signal.SIGTERM, 3)
        if self._final_log is None:
            self._final_log = self.log
        return rc

    @property
    def log(self) -> str:
        """Everything sippy wrote (its SIP trace and any traceback)."""
        if self._final_log is not None:
            return self._final_log
        if self.workdir is None:
            return ""
        return _read(self.workdir / "sippy.err") + _read(self.workdir / "sippy.out")

    def received(self, method: str) -> list[str]:
        """The ``method`` requests sippy logged as received (message text, CRLF normalised to LF)."""
        return _messages(self.log, "RECEIVED", method)

    def sent(self, method: str) -> list[str]:
        """The ``method`` requests sippy logged as sent."""
        return _messages(self.log, "SENDING", method)

    def describe(self) -> str:
        return f"sippy on {self.sip_target} -> {self.next_hop}: {' '.join(self.command())}\n{_tail(self.log, 60)}"

    def _leave(self) -> None:
        with contextlib.suppress(PeerError):
            self.stop()  # also when it already exited: the log is kept here


# "27 Nov 07:25:07.751/GLOBAL/b2bua: SENDING message to udp:127.0.0.1:45095:" opens each logged message; sippy's own
# error reports open with "2026-11-27 07:25:31.462943 @/path/b2bua.py[pid] ...".
_ENTRY = re.compile(
    r"^(?:\d\d \w{3} [\d:.]+/\S+: (?P<dir>RECEIVED|SENDING) message (?:from|to) \S+:|\d{4}-\d\d-\d\d [\d:.]+ @.*)$",
    re.MULTILINE,
)


def _messages(log: str, direction: str, method: str) -> list[str]:
    marks = list(_ENTRY.finditer(log))
    found = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        if mark.group("dir") != direction:
            continue
        text = log[mark.end() : following.start() if following is not None else len(log)].strip("\r\n")
        if text.startswith(f"{method} "):
            found.append(text.replace("\r\n", "\n"))
    return found


def header_lines(message: str) -> list[tuple[str, str]]:
    """(name, value) of every header line of a logged SIP message, as written (the start line and body left out)."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]
    return [(name, value.lstrip(" \t")) for name, _, value in (line.partition(":") for line in head)]
