"""Real peers for interop tests and benchmarks: SIPp, baresip, sipsak, tshark, and the ivr daemon itself.

Every helper here runs a real program as a subprocess and owns it completely:

- ports are chosen at run time (never fixed), so tests can run in parallel;
- every child runs under GNU ``timeout`` in its own session, and ``stop()``/``__exit__`` always end it
  (politely first, then SIGKILL to its process group), even when the test failed half way;
- stdout/stderr go to files in a private work directory (no pipe can fill up and block the peer),
  and are kept for assertions and for the failure message.

Facts about the peers that the code below relies on (all checked on Debian 12 packages:
sip-tester 3.6.1, baresip 1.0.0, tshark 4.0.17, sipsak 0.9.8.1) are written next to the code that uses them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SCENARIOS = HERE / "scenarios"
SIPP_SHARE = Path("/usr/share/sip-tester")
DEFAULT_CONFIG = REPO_ROOT / "configs" / "ivr.yaml"
WELCOME_PROMPT = REPO_ROOT / "configs" / "prompts" / "en" / "welcome.wav"
LOCALHOST = "127.0.0.1"

# Ports handed out by this process, so two helpers in one test never get the same one even before
# either has bound it. Other processes (parallel test workers) are avoided by a bind test.
_handed_out: set[int] = set()
_port_lock = threading.Lock()


class PeerError(RuntimeError):
    """A peer did not start, did not answer, or answered something we cannot read."""


def have(binary: str) -> bool:
    """True when ``binary`` is on PATH."""
    return shutil.which(binary) is not None


# --------------------------------------------------------------------------------------------------
# ports


def _udp_bindable(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_bindable(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(host: str = LOCALHOST, *, also_tcp: bool = False) -> int:
    """A UDP port on ``host`` that nothing is bound to now (and, with ``also_tcp``, no TCP either).

    The kernel picks it (bind to port 0), so it comes from the ephemeral range and does not collide with
    the blocks that :func:`free_port_block` hands out below that range.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        with _port_lock:
            if port in _handed_out:
                continue
            if also_tcp and not _tcp_bindable(port, host):
                continue
            _handed_out.add(port)
            return port
    raise PeerError("no free UDP port found")


def free_tcp_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        with _port_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise PeerError("no free TCP port found")


def free_port_block(count: int, host: str = LOCALHOST, *, low: int = 10000, high: int = 32000) -> tuple[int, int]:
    """An even-aligned block ``[lo, hi]`` of ``count`` UDP ports, every one of them bindable right now.

    Taken below Linux's ephemeral range (32768-60999) so that ports the kernel hands to other sockets
    do not land inside it. Random placement keeps parallel test workers apart.
    """
    if count < 2:
        count = 2
    count += count % 2
    for _ in range(200):
        lo = random.randrange(low, high - count) & ~1
        hi = lo + count - 1
        with _port_lock:
            if any(p in _handed_out for p in range(lo, hi + 1)):
                continue
            if all(_udp_bindable(p, host) for p in range(lo, hi + 1)):
                _handed_out.update(range(lo, hi + 1))
                return lo, hi
    raise PeerError(f"no free block of {count} UDP ports in {low}-{high}")


# --------------------------------------------------------------------------------------------------
# processes


def _kill_group(proc: subprocess.Popen[bytes], sig: int, *, even_if_exited: bool = False) -> None:
    """Signal the process group that ``proc`` leads (it was started with ``start_new_session``).

    The kernel does not reuse a pid while a process group of that id has members, so signalling the
    group of an exited leader reaches only its leftover children (or nobody: ESRCH).
    """
    if proc.poll() is not None and not even_if_exited:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _end_process(proc: subprocess.Popen[bytes], first: int, grace: float) -> int:
    """Send ``first`` to the peer itself, wait ``grace`` seconds, then SIGKILL the group. Returns the exit code.

    The first signal goes to the one process under ``timeout`` (not to the group): a daemon must get exactly
    one SIGTERM, as from an init system. Signalling the group would deliver it twice (once directly, once
    forwarded by timeout), and a daemon that drains on the first SIGTERM may rightly die on the second.
    """
    if proc.poll() is None:
        child = _child_pid(proc.pid)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, first)
        else:
            _kill_group(proc, first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(10)
    # A child that left grandchildren in the group (dumpcap under tshark): make sure they are gone.
    _kill_group(proc, signal.SIGKILL, even_if_exited=True)
    rc = proc.returncode
    assert rc is not None
    return rc


def _spawn(
    argv: Sequence[str],
    *,
    workdir: Path,
    name: str,
    lifetime: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    kill_after: float = 5.0,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` under ``timeout`` in a new session; stdout/stderr to ``workdir/name.{out,err}``.

    GNU timeout forwards SIGTERM/SIGINT to its child and exits with the child's status, so signalling the
    returned process is signalling the peer; if the test process dies, the peer still ends after ``lifetime``.
    """
    full = ["timeout", "-k", f"{kill_after:g}", f"{lifetime:g}", *argv]
    out = (workdir / f"{name}.out").open("wb")
    err = (workdir / f"{name}.err").open("wb")
    try:
        return subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=str(cwd or workdir),
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    finally:
        out.close()
        err.close()


def _child_pid(pid: int) -> int | None:
    """The first child of ``pid`` (the real peer under ``timeout``), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return None
    parts = text.split()
    return int(parts[0]) if parts else None


class WorkDir:
    """A private temporary directory that ``cleanup()`` removes, unless IVR_INTEROP_KEEP is set (to debug).

    Unlike ``tempfile.TemporaryDirectory`` it is never removed behind our back by a finalizer.
    """

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def cleanup(self) -> None:
        if os.environ.get("IVR_INTEROP_KEEP"):
            return
        shutil.rmtree(self.path, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (structlog's console renderer colours even when not on a tty)."""
    return _ANSI.sub("", text)


# --------------------------------------------------------------------------------------------------
# SIP OPTIONS ping (raw UDP)


def sip_options_ping(host: str, port: int, timeout: float = 1.0, *, ruri_user: str = "ivr") -> int | None:
    """Send one SIP OPTIONS over UDP to ``host:port``; return the final status code, or None on silence.

    Provisional responses are skipped; a response is matched to our request by Call-ID. Retransmits the
    request every 250 ms (a fraction of RFC 3261 T1, enough on loopback) until ``timeout``.
    """
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST if host.startswith("127.") else "", 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        request = (
            f"OPTIONS sip:{ruri_user}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCALHOST}:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{LOCALHOST}:{lport}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{ruri_user}@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{LOCALHOST}:{lport}>\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_send:
                with contextlib.suppress(OSError):
                    s.sendto(request, (host, port))
                next_send = now + 0.25
            s.settimeout(max(0.01, min(deadline, next_send) - now))
            try:
                data = s.recv(65535)
            except (TimeoutError, ConnectionRefusedError, OSError):
                continue
            status = _parse_status(data, call_id)
            if status is not None and status >= 200:
                return status


def _parse_status(data: bytes, call_id: str) -> int | None:
    text = data.decode("utf-8", errors="replace")
    m = re.match(r"SIP/2\.0 (\d{3}) ", text)
    if not m:
        return None
    cid = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    if cid is None or cid.group(1) != call_id:
        return None
    return int(m.group(1))


def wait_sip_ready(host: str, port: int, timeout: float, alive: Any = None) -> int:
    """Poll with OPTIONS until a 200 comes back; raise PeerError after ``timeout`` seconds.

    ``alive`` (a callable returning bool) lets the caller stop waiting early when its process died.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise PeerError(f"process exited before answering OPTIONS on {host}:{port}")
        last = sip_options_ping(host, port, timeout=0.5)
        if last == 200:
            return last
        time.sleep(0.1)
    raise PeerError(f"no 200 to OPTIONS on {host}:{port} within {timeout:g}s (last answer: {last})")


# --------------------------------------------------------------------------------------------------
# the ivr daemon


def _absolutise_paths(node: Any, base: Path) -> Any:
    """Turn every string that names an existing file or folder relative to ``base`` into an absolute path.

    A temporary config lives in a temporary folder, but the repo's config names files relative to its own
    folder (``calls.welcome_prompt: prompts/en/welcome.wav``): without this the copy would point nowhere.
    """
    if isinstance(node, dict):
        return {k: _absolutise_paths(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolutise_paths(v, base) for v in node]
    if isinstance(node, str) and node and not os.path.isabs(node) and ("/" in node or "." in node):
        candidate = base / node
        if candidate.exists() and not re.fullmatch(r"[\d.:]+", node):
            return str(candidate.resolve())
    return node


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PeerError(f"{path}: top level is not a mapping")
    return data


def dump_yaml(data: Mapping[str, Any], path: Path) -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w") as fh:
        yaml.dump(dict(data), fh)


_KV = re.compile(r"(\w+)=(\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S+)")


def parse_kv(line: str) -> dict[str, str]:
    """key=value pairs of one structlog line (console or logfmt-like), quotes removed, colours stripped."""
    out: dict[str, str] = {}
    for key, value in _KV.findall(strip_ansi(line)):
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


class PeerProcess:
    """What every peer run as a subprocess shares, written once: ``with Peer(...) as peer`` starts it (and cleans up
    when starting fails); leaving the block stops it if it still runs, keeps what it wrote to stderr
    (``stderr_text()`` still answers) and removes its work directory (unless ``keep_workdir_on_exit``: a capture
    whose file is analysed afterwards). A peer sets ``proc``, ``workdir`` and ``_tmp``, names its ``stderr_file``,
    and implements ``start()`` and ``stop()``."""

    stderr_file = ""
    keep_workdir_on_exit = False
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    _tmp: WorkDir | None = None
    _final_stderr: str | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        """Everything the peer wrote to stderr so far (kept after the ``with`` block cleaned up)."""
        if self._final_stderr is not None:
            return self._final_stderr
        return _read(self.workdir / self.stderr_file) if self.workdir is not None and self.stderr_file else ""

    def _leave(self) -> None:
        """Stop the peer on the way out of the ``with`` block (a peer that must always tidy up overrides it)."""
        if self.alive():
            with contextlib.suppress(PeerError):
                self.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()
        self._final_stderr = self.stderr_text()
        if self._tmp is not None and not self.keep_workdir_on_exit:
            self._tmp.cleanup()


class IvrDaemon(PeerProcess):
    """``python -m ivr serve`` as a subprocess on free ports, ready when it answers OPTIONS with 200.

    >>> with IvrDaemon(hold_calls=True) as ivr:
    ...     Sipp("uac", ivr.sip_target, calls=1).run()
    ...     ivr.stop()        # SIGTERM; returns the exit code
    ...     ivr.stderr_text()

    ``config``: a path to use as is; ``overrides``: a mapping deep-merged into the base config (the repo's
    configs/ivr.yaml), written with relative file paths made absolute to a temp file. ``hold_calls`` adds
    ``--hold-calls``. ``cpus`` pins it with ``taskset -c``. ``module``/``python_path`` run another module
    with the same command line (the harness self-test runs a stand-in daemon that way).

    Exit code: GNU timeout passes the daemon's own status through; a daemon killed by a signal shows as
    the negative signal number.
    """

    stderr_file = "ivr.err"

    def __init__(
        self,
        *,
        config: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        hold_calls: bool = False,
        rtp_port_count: int = 64,
        rtp_ports: tuple[int, int] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 15.0,
        stop_timeout: float = 15.0,
        lifetime: float = 900.0,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "ivr",
        python_path: Sequence[Path] = (),
        flows: bool = False,
    ) -> None:
        self.host = LOCALHOST
        self.flows = flows
        self.module = module
        self.python_path = [Path(p) for p in python_path]
        self.config = config if config is not None else DEFAULT_CONFIG
        self.overrides = dict(overrides or {})
        self.hold_calls = hold_calls
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.lifetime = lifetime
        self.cpus = cpus
        self._rtp_port_count = rtp_port_count
        self._rtp_ports = rtp_ports
        self._env = env
        self.sip_port = 0
        self.rtp_lo = 0
        self.rtp_hi = 0
        self.workdir: Path | None = None
        self._tmp: WorkDir | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._final_stderr: str | None = None

    # -- lifecycle

    def command(self, config_path: Path) -> list[str]:
        argv = [
            os.environ.get("IVR_PYTHON", sys.executable),
            "-m",
            self.module,
            "serve",
            "--config",
            str(config_path),
            "--listen",
            f"{self.host}:{self.sip_port}",
            "--rtp-ports",
            f"{self.rtp_lo}-{self.rtp_hi}",
        ]
        if self.hold_calls:
            argv.append("--hold-calls")
        elif not self.flows:
            argv.append("--welcome-only")
        # Every daemon gets its own admin port and CDR file, so tests can run side by side.
        assert self.workdir is not None
        argv += ["--admin-listen", f"{self.host}:0", "--cdr", f"sqlite:///{self.workdir / 'cdr.db'}"]
        argv += self.extra_args
        if self.cpus is not None:
            argv = ["taskset", "-c", self.cpus, *argv]
        return argv

    def start(self) -> Self:
        self._tmp = WorkDir("ivr-daemon-")
        self.workdir = self._tmp.path
        self.sip_port = free_udp_port(self.host, also_tcp=True)
        if self._rtp_ports is not None:
            self.rtp_lo, self.rtp_hi = self._rtp_ports
        else:
            self.rtp_lo, self.rtp_hi = free_port_block(self._rtp_port_count, self.host)
        config_path = self.config
        if self.overrides:
            base = load_yaml(self.config) if self.config.exists() else {}
            merged = _absolutise_paths(_deep_merge(base, self.overrides), self.config.parent)
            config_path = self.workdir / "ivr.yaml"
            dump_yaml(merged, config_path)
        env = dict(os.environ if self._env is None else self._env)
        paths = [str(p) for p in [*self.python_path, REPO_ROOT]]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = _spawn(
            self.command(config_path),
            workdir=self.workdir,
            name="ivr",
            lifetime=self.lifetime,
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            wait_sip_ready(self.host, self.sip_port, self.ready_timeout, alive=self.alive)
        except PeerError as exc:
            self.kill()
            self._final_stderr = self.stderr_text()
            self._tmp.cleanup()
            raise PeerError(f"ivr daemon not ready: {exc}\n--- daemon stderr ---\n{_tail(self.stderr_text())}") from exc
        return self

    @property
    def pid(self) -> int | None:
        """The daemon's own pid (the Python process under ``timeout``/``taskset``)."""
        if self.proc is None:
            return None
        return _child_pid(self.proc.pid)

    def terminate(self) -> int:
        """SIGTERM and wait up to ``stop_timeout``; then SIGKILL. Returns the exit code (0 = clean drain)."""
        if self.proc is None:
            raise PeerError("daemon not started")
        self.returncode = _end_process(self.proc, signal.SIGTERM, self.stop_timeout)
        return self.returncode

    stop = terminate

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon itself (not to ``timeout`` above it)."""
        pid = self.pid
        if pid is None:
            raise PeerError("daemon not running")
        os.kill(pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            self.returncode = _end_process(self.proc, signal.SIGKILL, 5)

    # -- what it said

    @property
    def sip_target(self) -> str:
        """``host:port`` for SIPp's remote argument."""
        return f"{self.host}:{self.sip_port}"

    @property
    def uri(self) -> str:
        return f"sip:ivr@{self.host}:{self.sip_port}"

    def log_records(self, must_have: str) -> list[dict[str, str]]:
        """key=value pairs of every stderr line that contains the key ``must_have``."""
        records = []
        for line in strip_ansi(self.stderr_text()).splitlines():
            kv = parse_kv(line)
            if must_have in kv:
                records.append(kv)
        return records

    def call_end_records(self) -> list[dict[str, str]]:
        """One dict per ended call: the lines that carry ``rtp_packets_received=`` and ``dtmf_digits=``."""
        return [r for r in self.log_records("rtp_packets_received") if "dtmf_digits" in r]

    def describe(self) -> str:
        return f"ivr daemon on {self.sip_target} rtp {self.rtp_lo}-{self.rtp_hi}\n{_tail(self.stderr_text())}"


# --------------------------------------------------------------------------------------------------
# SIPp

# SIPp 3.6.1 exit codes (sipp(1)): 0 all calls succeeded, 1 at least one failed, 97 exit on internal
# command, 99 normal exit without calls processed, 255 (-1) fatal error, 254 (-2) fatal binding a socket.
SIPP_EXIT = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "exit without calls processed",
    124: "killed by timeout",
    254: "fatal: cannot bind a socket",
    255: "fatal error",
}

SIPP_BUILTINS = {"uac", "uas", "regexp", "branchc", "branchs", "uac_pcap", "3pcc-C-A", "3pcc-C-B", "3pcc-A", "3pcc-B"}


@dataclass(frozen=True)
class SippStats:
    """The cumulative counters of the last row of SIPp's ``-trace_stat`` CSV (``;``-separated, header first)."""

    created: int
    current: int
    successful: int
    failed: int
    retransmissions: int
    out_of_call: int
    dead_call: int
    unexpected: int
    timeouts: int
    max_udp_retrans: int
    auto_answered: int
    warnings: int
    fatal_errors: int
    raw: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_csv(cls, path: Path) -> SippStats:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if len(lines) < 2:
            raise PeerError(f"{path}: no statistics row")
        header = lines[0].rstrip(";").split(";")
        # the last complete row (SIPp may be writing the next one while a test reads mid-run)
        rows = [ln.rstrip(";").split(";") for ln in lines[1:]]
        complete = [r for r in rows if len(r) == len(header)]
        if not complete:
            raise PeerError(f"{path}: no complete statistics row")
        raw = dict(zip(header, complete[-1], strict=True))

        def c(name: str) -> int:
            value = raw.get(f"{name}(C)", "0").strip()
            try:
                return int(float(value))
            except ValueError:
                return 0

        return cls(
            created=int(raw.get("TotalCallCreated", "0") or 0),
            current=int(raw.get("CurrentCall", "0") or 0),
            successful=c("SuccessfulCall"),
            failed=c("FailedCall"),
            retransmissions=c("Retransmissions"),
            out_of_call=c("OutOfCallMsgs"),
            dead_call=c("DeadCallMsgs"),
            unexpected=c("FailedUnexpectedMessage"),
            timeouts=c("FailedTimeoutOnRecv") + c("FailedTimeoutOnSend"),
            max_udp_retrans=c("FailedMaxUDPRetrans"),
            auto_answered=c("AutoAnswered"),
            warnings=c("Warnings"),
            fatal_errors=c("FatalErrors"),
            raw=raw,
        )


@dataclass
class SippResult:
    returncode: int
    stats: SippStats | None
    stdout: str
    stderr: str
    errors: str
    messages: str
    command: list[str]

    @property
    def meaning(self) -> str:
        return SIPP_EXIT.get(self.returncode, "unknown exit code")

    def describe(self) -> str:
        """Everything needed to understand a failed run, for an assertion message."""
        return (
            f"sipp exit {self.returncode} ({self.meaning})\n"
            f"command: {' '.join(self.command)}\n"
            f"stats: {self.stats}\n"
            f"--- stderr ---\n{_tail(self.stderr, 20)}\n"
            f"--- error log ---\n{_tail(self.errors, 30)}"
        )


class Sipp(PeerProcess):
    """One SIPp run in the foreground (``-nostdin``), under ``timeout``, in a private work directory.

    ``scenario``: a built-in name (``uac``, ``uas``...), or an XML file (a bare name is looked up in
    tests/interop/scenarios). ``remote``: ``host:port`` for a UAC, None for a UAS. ``files``: extra files to
    link into the work directory (SIPp resolves relative paths in scenarios, e.g. rtp_stream, from there).

    ``run()`` blocks until SIPp exits; ``start()`` + ``wait()`` let the test act while calls are up.
    """

    stderr_file = "sipp.err"

    def __init__(
        self,
        scenario: str | Path,
        remote: str | None = None,
        *,
        calls: int = 1,
        rate: float = 10.0,
        limit: int | None = None,
        duration_ms: int | None = None,
        service: str = "ivr",
        local_ip: str = LOCALHOST,
        local_port: int | None = None,
        media_port: int | None = None,
        transport: str = "u1",
        timeout: float = 120.0,
        extra_args: Sequence[str] = (),
        files: Mapping[str, Path] | None = None,
        trace_msg: bool = False,
        cpus: str | None = None,
        stat_period_s: int = 1,
    ) -> None:
        self.scenario = scenario
        self.stat_period_s = stat_period_s
        self.remote = remote
        self.calls = calls
        self.rate = rate
        self.limit = limit
        self.duration_ms = duration_ms
        self.service = service
        self.local_ip = local_ip
        self.local_port = local_port if local_port is not None else free_udp_port(local_ip)
        if media_port is None:
            # SIPp binds -mp and -mp+2 (its echo / rtp_stream sockets); auto_media_port walks from there
            # by 4 per call without binding (pcap replay uses raw sockets).
            media_port, _ = free_port_block(4, local_ip)
        self.media_port = media_port
        self.control_port = free_udp_port(LOCALHOST)
        self.transport = transport
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.files = dict(files or {})
        self.trace_msg = trace_msg
        self.cpus = cpus
        self._tmp = WorkDir("sipp-")
        self.workdir = self._tmp.path
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: SippResult | None = None

    def _scenario_args(self) -> list[str]:
        sc = self.scenario
        if isinstance(sc, Path) or sc.endswith(".xml"):
            path = Path(sc)
            if not path.is_absolute() and not path.exists():
                path = SCENARIOS / path
            if not path.exists():
                raise PeerError(f"no SIPp scenario {path}")
            return ["-sf", str(path.resolve())]
        if sc not in SIPP_BUILTINS:
            raise PeerError(f"{sc!r} is neither a SIPp built-in scenario nor an .xml file")
        return ["-sn", sc]

    def command(self) -> list[str]:
        argv = ["sipp"]
        if self.remote:
            argv.append(self.remote)
        argv += self._scenario_args()
        argv += [
            "-nostdin",
            "-t",
            self.transport,
            "-i",
            self.local_ip,
            "-p",
            str(self.local_port),
            "-mi",
            self.local_ip,
            "-mp",
            str(self.media_port),
            "-cp",
            str(self.control_port),
            "-s",
            self.service,
            "-m",
            str(self.calls),
            "-r",
            f"{self.rate:g}",
            "-buff_size",
            "4194304",
            "-trace_stat",
            "-stf",
            str(self.workdir / "stat.csv"),
            "-fd",
            str(self.stat_period_s),
            "-trace_err",
            "-error_file",
            str(self.workdir / "errors.log"),
        ]
        if self.limit is not None:
            argv += ["-l", str(self.limit)]
        if self.duration_ms is not None:
            argv += ["-d", str(self.duration_ms)]
        if self.trace_msg:
            argv += ["-trace_msg", "-message_file", str(self.workdir / "messages.log")]
        argv += self.extra_args
        if self.cpus is not None:
            argv = ["taskset", "-c", self.cpus, *argv]
        return argv

    def start(self) -> Self:
        for name, src in self.files.items():
            dst = self.workdir / name
            if not dst.exists():
                dst.symlink_to(Path(src).resolve())
        self._argv = self.command()
        self.proc = _spawn(self._argv, workdir=self.workdir, name="sipp", lifetime=self.timeout)
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else _child_pid(self.proc.pid)

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end (by itself); kill it after ``timeout`` (default: its own lifetime + 10 s)."""
        if self.proc is None:
            raise PeerError("sipp not started")
        try:
            rc = self.proc.wait(self.timeout + 10 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            rc = _end_process(self.proc, signal.SIGTERM, 3)
        return self._collect(rc)

    def stop(self) -> SippResult:
        """End SIPp now (SIGTERM, then SIGKILL) and collect what it wrote."""
        if self.proc is None:
            raise PeerError("sipp not started")
        rc = _end_process(self.proc, signal.SIGTERM, 5)
        return self._collect(rc)

    def run(self) -> SippResult:
        """Start, wait for the end, remove the work directory (the result keeps every log as text)."""
        try:
            return self.start().wait()
        finally:
            self.__exit__(None, None, None)

    def current_stats(self) -> SippStats | None:
        """The counters SIPp dumped last (every ``stat_period_s`` while it runs); None before the first dump."""
        try:
            return SippStats.from_csv(self.workdir / "stat.csv")
        except (OSError, PeerError):
            return None

    def wait_current_calls(self, n: int, timeout: float) -> SippStats:
        """Wait until SIPp reports ``n`` calls in progress (``CurrentCall``); PeerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        stats = None
        while time.monotonic() < deadline:
            stats = self.current_stats()
            if stats is not None and stats.current == n:
                return stats
            if not self.alive():
                break
            time.sleep(0.2)
        raise PeerError(f"SIPp did not reach {n} calls in progress within {timeout:g}s (last: {stats})")

    def _collect(self, rc: int) -> SippResult:
        stat = self.workdir / "stat.csv"
        stats = None
        if stat.exists():
            with contextlib.suppress(PeerError):
                stats = SippStats.from_csv(stat)
        self.result = SippResult(
            returncode=rc,
            stats=stats,
            stdout=_read(self.workdir / "sipp.out"),
            stderr=_read(self.workdir / "sipp.err"),
            errors=_read(self.workdir / "errors.log"),
            messages=_read(self.workdir / "messages.log"),
            command=self._argv,
        )
        return self.result

    def __enter__(self) -> Self:
        return self  # run() or start() starts it


# --------------------------------------------------------------------------------------------------
# baresip


@dataclass(frozen=True)
class BaresipEvent:
    """One ctrl_tcp event, e.g. ``{"event":true,"type":"CALL_ESTABLISHED","class":"call",...}``."""

    type: str
    klass: str
    param: str
    call_id: str | None
    peer_uri: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class AudioStats:
    """What a recording holds: its length, loudness, and how much of it is more than silence."""

    path: Path
    rate: int
    seconds: float
    rms_dbfs: float
    peak: int
    active_seconds: float
    dominant_hz: float


def _dbfs(x: npt.NDArray[np.float64]) -> float:
    rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return float(20 * np.log10(rms / 32768.0)) if rms > 0 else -200.0


def audio_stats(samples: npt.NDArray[np.float64], rate: int, path: Path, active_dbfs: float = -45.0) -> AudioStats:
    """Length, RMS, peak, seconds of 20 ms frames louder than ``active_dbfs``, and the strongest frequency."""
    frame = max(1, rate // 50)
    n = samples.size // frame
    active = 0
    for i in range(n):
        if _dbfs(samples[i * frame : (i + 1) * frame]) > active_dbfs:
            active += 1
    dominant = 0.0
    if samples.size >= 64:
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        spectrum[0] = 0.0
        dominant = float(np.argmax(spectrum)) * rate / samples.size
    return AudioStats(
        path=path,
        rate=rate,
        seconds=samples.size / rate if rate else 0.0,
        rms_dbfs=_dbfs(samples),
        peak=int(np.max(np.abs(samples))) if samples.size else 0,
        active_seconds=active * frame / rate if rate else 0.0,
        dominant_hz=dominant,
    )


def envelope(samples: npt.NDArray[np.float64], rate: int, frame_ms: int = 20) -> npt.NDArray[np.float64]:
    """Loudness (dB) of each ``frame_ms`` frame: a rate-independent fingerprint of speech."""
    frame = max(1, rate * frame_ms // 1000)
    n = samples.size // frame
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * frame].reshape(n, frame)
    rms = np.sqrt(np.mean(np.square(frames), axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1.0)), dtype=np.float64)


def envelope_similarity(
    heard: npt.NDArray[np.float64], reference: npt.NDArray[np.float64], max_lag_frames: int = 100
) -> float:
    """Best Pearson correlation of two loudness envelopes over lags of up to ``max_lag_frames`` frames.

    Speech against the same speech (through G.711, a jitter buffer, a few frames of delay) scores above
    0.9; against other speech, a tone or silence it scores far lower. Compared over the shorter length.
    """
    best = -1.0
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        a = heard[lag:] if lag >= 0 else heard
        b = reference if lag >= 0 else reference[-lag:]
        n = min(a.size, b.size)
        if n < 25:  # half a second at least
            continue
        x, y = a[:n], b[:n]
        if float(np.std(x)) == 0.0 or float(np.std(y)) == 0.0:
            continue
        best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


def wav_samples(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """First channel of a 16-bit PCM WAV as floats, and its rate (standard library reader)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        width = w.getsampwidth()
        frames = w.readframes(w.getnframes())
    if width != 2:
        raise PeerError(f"{path}: {8 * width}-bit samples, expected 16-bit")
    data = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    return (data[::channels] if channels > 1 else data), rate


def sound_file_samples(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """First channel of any file soundfile reads, as 16-bit-scaled floats, and its rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return data[:, 0].astype(np.float64), int(rate)


def alaw_to_linear(payload: bytes) -> npt.NDArray[np.float64]:
    """G.711 A-law bytes to 16-bit-scaled samples (ITU-T G.711, independent of ivr.media)."""
    a = np.frombuffer(payload, dtype=np.uint8).astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float64)


def wav_stats(path: Path, active_dbfs: float = -45.0) -> AudioStats:
    """:func:`audio_stats` of a 16-bit PCM WAV (first channel), read with the standard library."""
    data, rate = wav_samples(path)
    return audio_stats(data, rate, path, active_dbfs)


def sound_file_stats(path: Path, active_dbfs: float = -45.0) -> AudioStats:
    """:func:`audio_stats` of any file soundfile reads (a prompt of any format and rate)."""
    data, rate = sound_file_samples(path)
    return audio_stats(data, rate, path, active_dbfs)


class Baresip(PeerProcess):
    """baresip 1.0.0, headless, driven over ctrl_tcp (JSON netstrings), recording what it hears.

    Config written to a temp dir (``baresip -f DIR``): SIP on a free port of 127.0.0.1, ``ausine`` as the
    microphone (a sine; the module only runs at 48 kHz stereo, hence ``ausrc_srate 48000`` and
    ``ausrc_channels 2``, baresip resamples to 8 kHz), ``aubridge`` as the speaker (a sink nobody reads),
    and the ``sndfile`` audio filter, which writes what is sent and heard to
    ``snd_path/dump-<YYYY-MM-DD-hh-mm-ss>-enc.wav`` and ``...-dec.wav`` (8 kHz mono 16-bit, one pair per
    call; the decoded file grows only while RTP arrives, so its length is what was heard). baresip 1.0.0's
    ``aufile`` module is a source only (it cannot record), so ``sndfile`` is the way to capture audio.
    """

    stderr_file = "baresip.err"

    def __init__(
        self,
        *,
        user: str = "tester",
        answermode: str = "manual",
        audio_codecs: str = "PCMU,PCMA",
        sine_hz: int = 440,
        lifetime: float = 600.0,
        extra_config: str = "",
    ) -> None:
        self.user = user
        self.answermode = answermode
        self.audio_codecs = audio_codecs
        self.sine_hz = sine_hz
        self.lifetime = lifetime
        self.extra_config = extra_config
        self.sip_port = 0
        self.ctrl_port = 0
        self._tmp = WorkDir("baresip-")
        self.workdir = self._tmp.path
        self.record_dir = self.workdir / "rec"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._events: Queue[BaresipEvent] = Queue()
        self.events: list[BaresipEvent] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._response_ready = threading.Condition()
        self._closed = threading.Event()

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{LOCALHOST}:{self.sip_port}"

    def _write_config(self) -> None:
        self.record_dir.mkdir(exist_ok=True)
        rtp_lo, rtp_hi = free_port_block(16)
        config = f"""\
poll_method             epoll
module_path             /usr/lib/baresip/modules
sip_listen              {LOCALHOST}:{self.sip_port}
net_interface           {LOCALHOST}
call_local_timeout      120
call_max_calls          8
audio_source            ausine,{self.sine_hz}
ausrc_srate             48000
ausrc_channels          2
audio_player            aubridge,sink
audio_alert             aubridge,sink
rtp_ports               {rtp_lo}-{rtp_hi}
rtp_stats               no
jitter_buffer_delay     1-10
statmode_default        off
module                  g711.so
module                  ausine.so
module                  aubridge.so
module                  sndfile.so
module_tmp              account.so
module_app              menu.so
module_app              ctrl_tcp.so
ctrl_tcp_listen         {LOCALHOST}:{self.ctrl_port}
snd_path                {self.record_dir}
{self.extra_config}
"""
        (self.workdir / "config").write_text(config)
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@{LOCALHOST}:{self.sip_port}>;regint=0;"
            f"audio_codecs={self.audio_codecs};answermode={self.answermode}\n"
        )
        (self.workdir / "contacts").write_text("")

    def start(self, ready_timeout: float = 10.0) -> Self:
        self.sip_port = free_udp_port(also_tcp=True)
        self.ctrl_port = free_tcp_port()
        self._write_config()
        self.proc = _spawn(
            ["baresip", "-f", str(self.workdir)], workdir=self.workdir, name="baresip", lifetime=self.lifetime
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise PeerError(f"baresip exited ({self.proc.returncode}):\n{self.output()}")
            try:
                self._sock = socket.create_connection((LOCALHOST, self.ctrl_port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise PeerError(f"baresip ctrl_tcp not listening on {self.ctrl_port}:\n{self.output()}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="baresip-ctrl", daemon=True)
        self._reader.start()
        return self

    def output(self) -> str:
        return strip_ansi(_read(self.workdir / "baresip.out") + _read(self.workdir / "baresip.err"))

    # -- ctrl_tcp: netstrings "LEN:{json},"

    def _read_loop(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon <= 0:
                    break
                try:
                    length = int(buf[:colon])
                except ValueError as exc:
                    raise PeerError(f"baresip ctrl_tcp: not a netstring: {buf[:40]!r}") from exc
                end = colon + 1 + length
                if len(buf) < end + 1:
                    break
                payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                self._dispatch(json.loads(payload))
        self._closed.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("event"):
            ev = BaresipEvent(
                type=str(msg.get("type", "")),
                klass=str(msg.get("class", "")),
                param=str(msg.get("param", "")),
                call_id=msg.get("id"),
                peer_uri=msg.get("peeruri"),
                raw=msg,
            )
            self.events.append(ev)
            self._events.put(ev)
        elif msg.get("response"):
            with self._response_ready:
                self._responses[str(msg.get("token", ""))] = msg
                self._response_ready.notify_all()

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send one ctrl_tcp command and wait for its response (matched by token)."""
        if self._sock is None:
            raise PeerError("baresip not started")
        token = uuid.uuid4().hex[:12]
        msg: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            msg["params"] = params
        payload = json.dumps(msg).encode()
        self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        deadline = time.monotonic() + timeout
        with self._response_ready:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    raise PeerError(f"baresip: no response to {command!r} within {timeout:g}s")
                self._response_ready.wait(left)
            return self._responses.pop(token)

    def wait_event(self, type_: str, timeout: float = 10.0) -> BaresipEvent:
        """Wait for the next event of ``type_`` (others are kept in ``events``). Raises PeerError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e.type for e in self.events]
                raise PeerError(f"baresip: no {type_} within {timeout:g}s; events so far: {seen}")
            try:
                ev = self._events.get(timeout=left)
            except Empty:
                continue
            if ev.type == type_:
                return ev

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def answer(self) -> dict[str, Any]:
        return self.command("accept")

    def send_digit(self, digit: str) -> dict[str, Any]:
        """One RFC 4733 digit (``sndcode``); baresip sends one key per command."""
        if len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {digit!r}")
        return self.command("sndcode", digit)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def quit(self) -> None:
        with contextlib.suppress(PeerError, OSError):
            self.command("quit", timeout=2.0)

    # -- recordings

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's dumps, oldest first: ``dec`` = what was heard, ``enc`` = what was sent."""
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def heard(self, active_dbfs: float = -45.0) -> AudioStats:
        """Stats of the newest recording of what baresip heard. Call after the call closed."""
        files = self.recordings("dec")
        if not files:
            raise PeerError(f"baresip recorded nothing in {self.record_dir}:\n{_tail(self.output())}")
        return wav_stats(files[-1], active_dbfs)

    # -- lifecycle

    def kill(self) -> None:
        if self.proc is not None:
            _end_process(self.proc, signal.SIGKILL, 5)

    def stop(self) -> int:
        """``quit`` over ctrl_tcp, then SIGTERM/SIGKILL if it lingers. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.quit()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        rc = _end_process(self.proc, signal.SIGTERM, 3)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        return rc

    def _leave(self) -> None:
        self.stop()  # also when it already exited: the ctrl_tcp socket is closed here


# --------------------------------------------------------------------------------------------------
# tshark


@dataclass(frozen=True)
class StreamStats:
    """One row of ``tshark -q -z rtp,streams`` (times in seconds from capture start, deltas/jitter in ms)."""

    start_s: float
    end_s: float
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    ssrc: int
    payload: str
    packets: int
    lost: int
    lost_pct: float
    min_delta_ms: float
    mean_delta_ms: float
    max_delta_ms: float
    min_jitter_ms: float
    mean_jitter_ms: float
    max_jitter_ms: float
    problems: bool


@dataclass(frozen=True)
class RtpPacket:
    time_s: float
    src_port: int
    dst_port: int
    ssrc: int
    seq: int
    timestamp: int
    payload_type: int
    marker: bool


@dataclass(frozen=True)
class CaptureSummary:
    captured: int
    dropped: int
    text: str


# tshark 4.0 prints (header, then one line per stream; "X" at the end flags a problem):
#    Start time      End time     Src IP addr  Port    Dest IP addr  Port       SSRC          Payload  Pkts
#      Lost   Min Delta(ms)  Mean Delta(ms)   Max Delta(ms)  Min Jitter(ms) Mean Jitter(ms)  Max Jitter(ms) Problems?
#      0.121260      3.083376       127.0.0.1 18000       127.0.0.1 17000 0xCA110001            g711U   149
#      0 (0.0%)           0.004          20.014          36.182           0.013           0.797           2.410
# (each is one line in the real output). Payload is a codec name (g711U, g711A) or, for dynamic types
# without SDP in the capture, a name like "RTPType-101"; it may hold spaces in other versions, so the
# regex anchors on the fields around it.
_STREAM_HEADER = ("Start time", "End time", "SSRC", "Payload", "Pkts", "Lost", "Max Delta(ms)", "Max Jitter(ms)")
_STREAM_ROW = re.compile(
    r"^\s*(?P<start>\d+\.\d+)\s+(?P<end>\d+\.\d+)\s+"
    r"(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.+?)\s+(?P<pkts>\d+)\s+"
    r"(?P<lost>-?\d+)\s+\((?P<lostpct>-?[\d.]+)%\)\s+"
    r"(?P<mind>-?[\d.]+)\s+(?P<meand>-?[\d.]+)\s+(?P<maxd>-?[\d.]+)\s+"
    r"(?P<minj>-?[\d.]+)\s+(?P<meanj>-?[\d.]+)\s+(?P<maxj>-?[\d.]+)\s*(?P<problems>X)?\s*$"
)


def parse_rtp_streams(text: str) -> list[StreamStats]:
    """Parse the ``rtp,streams`` report. Raises PeerError if the table is missing or a row is unreadable."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if "RTP Streams" in ln)
    except StopIteration:
        raise PeerError(f"no 'RTP Streams' table in tshark output:\n{_tail(text)}") from None
    header = lines[start + 1] if start + 1 < len(lines) else ""
    missing = [h for h in _STREAM_HEADER if h not in header]
    if missing:
        raise PeerError(f"tshark rtp,streams header changed (missing {missing}): {header!r}")
    streams: list[StreamStats] = []
    for ln in lines[start + 2 :]:
        if ln.startswith("====") or not ln.strip():
            break
        m = _STREAM_ROW.match(ln)
        if m is None:
            raise PeerError(f"unreadable tshark rtp,streams row: {ln!r}")
        streams.append(
            StreamStats(
                start_s=float(m["start"]),
                end_s=float(m["end"]),
                src_ip=m["src"],
                src_port=int(m["sport"]),
                dst_ip=m["dst"],
                dst_port=int(m["dport"]),
                ssrc=int(m["ssrc"], 16),
                payload=m["payload"].strip(),
                packets=int(m["pkts"]),
                lost=int(m["lost"]),
                lost_pct=float(m["lostpct"]),
                min_delta_ms=float(m["mind"]),
                mean_delta_ms=float(m["meand"]),
                max_delta_ms=float(m["maxd"]),
                min_jitter_ms=float(m["minj"]),
                mean_jitter_ms=float(m["meanj"]),
                max_jitter_ms=float(m["maxj"]),
                problems=m["problems"] is not None,
            )
        )
    return streams


def _decode_as(port_lo: int, port_hi: int) -> list[str]:
    return ["-d", f"udp.port=={port_lo}-{port_hi},rtp"]


def rtp_streams(pcap: Path, port_lo: int, port_hi: int, timeout: float = 300.0) -> list[StreamStats]:
    """Per-stream statistics of every RTP stream with an end in ``[port_lo, port_hi]`` (decoded as RTP)."""
    proc = subprocess.run(
        [
            "timeout",
            "-k",
            "5",
            f"{timeout:g}",
            "tshark",
            "-n",
            "-r",
            str(pcap),
            *_decode_as(port_lo, port_hi),
            "-q",
            "-z",
            "rtp,streams",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PeerError(f"tshark -z rtp,streams failed ({proc.returncode}): {proc.stderr}")
    return parse_rtp_streams(proc.stdout)


def rtp_packets(pcap: Path, port_lo: int, port_hi: int, timeout: float = 300.0) -> list[RtpPacket]:
    """Every RTP packet (one line per packet from ``tshark -T fields``), in capture order."""
    fields = [
        "frame.time_relative",
        "udp.srcport",
        "udp.dstport",
        "rtp.ssrc",
        "rtp.seq",
        "rtp.timestamp",
        "rtp.p_type",
        "rtp.marker",
    ]
    argv = [
        "timeout",
        "-k",
        "5",
        f"{timeout:g}",
        "tshark",
        "-n",
        "-r",
        str(pcap),
        *_decode_as(port_lo, port_hi),
        "-Y",
        "rtp",
        "-T",
        "fields",
        "-E",
        "separator=,",
    ]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PeerError(f"tshark -T fields failed ({proc.returncode}): {proc.stderr}")
    packets = []
    for ln in proc.stdout.splitlines():
        parts = ln.split(",")
        if len(parts) != len(fields) or not parts[3]:
            continue
        packets.append(
            RtpPacket(
                time_s=float(parts[0]),
                src_port=int(parts[1]),
                dst_port=int(parts[2]),
                ssrc=int(parts[3], 16),
                seq=int(parts[4]),
                timestamp=int(parts[5]),
                payload_type=int(parts[6]),
                marker=parts[7] in ("1", "True", "true"),
            )
        )
    return packets


def rtp_payload_audio(pcap: Path, port_lo: int, port_hi: int, ssrc: int, timeout: float = 120.0) -> bytes:
    """The concatenated payloads of one RTP stream (by SSRC), in capture order: G.711 bytes to decode."""
    argv = [
        "timeout",
        "-k",
        "5",
        f"{timeout:g}",
        "tshark",
        "-n",
        "-r",
        str(pcap),
        *_decode_as(port_lo, port_hi),
        "-Y",
        f"rtp.ssrc == 0x{ssrc:08x}",
        "-T",
        "fields",
        "-e",
        "rtp.payload",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PeerError(f"tshark payload export failed ({proc.returncode}): {proc.stderr}")
    return b"".join(bytes.fromhex(ln.replace(":", "")) for ln in proc.stdout.split())


def late_packets(
    pcap: Path, port_lo: int, port_hi: int, threshold_ms: float = 30.0, timeout: float = 600.0
) -> tuple[int, int]:
    """(late, total): packets sent from ``[port_lo, port_hi]`` that came more than ``threshold_ms`` after the
    previous packet of the same stream (source port + SSRC), and all packets. Lean enough for millions of
    packets: tells one stall that hit every stream apart from streams that are late all the time."""
    argv = [
        "timeout",
        "-k",
        "5",
        f"{timeout:g}",
        "tshark",
        "-n",
        "-r",
        str(pcap),
        *_decode_as(port_lo, port_hi),
        "-Y",
        f"rtp && udp.srcport >= {port_lo} && udp.srcport <= {port_hi}",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "frame.time_relative",
        "-e",
        "udp.srcport",
        "-e",
        "rtp.ssrc",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PeerError(f"tshark -T fields failed ({proc.returncode}): {proc.stderr}")
    times: dict[tuple[str, str], list[float]] = {}
    for ln in proc.stdout.splitlines():
        t, port, ssrc = ln.split(",")
        times.setdefault((port, ssrc), []).append(float(t))
    late = total = 0
    for series in times.values():
        total += len(series)
        if len(series) > 1:
            late += int(np.count_nonzero(np.diff(np.asarray(series)) * 1000.0 > threshold_ms))
    return late, total


def sequence_breaks(packets: Sequence[RtpPacket]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """For each (source port, SSRC): the (previous, next) sequence numbers wherever next != previous + 1."""
    last: dict[tuple[int, int], int] = {}
    breaks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for p in packets:
        key = (p.src_port, p.ssrc)
        breaks.setdefault(key, [])
        if key in last and p.seq != (last[key] + 1) % 65536:
            breaks[key].append((last[key], p.seq))
        last[key] = p.seq
    return breaks


def tshark_can_capture(interface: str = "lo") -> bool:
    """True when tshark is installed and this user may capture on ``interface`` (root, or dumpcap caps)."""
    if not have("tshark"):
        return False
    proc = subprocess.run(["timeout", "20", "tshark", "-D"], capture_output=True, text=True, check=False)
    pattern = re.compile(rf"\b{re.escape(interface)}\b")
    return proc.returncode == 0 and any(pattern.search(ln) for ln in proc.stdout.splitlines())


class TsharkCapture(PeerProcess):
    """Capture loopback UDP on a port range to a pcap file, then analyse it with :func:`rtp_streams`.

    Leaving the ``with`` block stops the capture but keeps the file for analysis: call ``cleanup()`` after.

    ``even_only`` keeps only packets whose port inside the range is even (RTP), leaving RTCP on the odd
    ports out, so decoding the range as RTP does not turn RTCP into bogus streams. ``direction``:
    ``"both"``, ``"from"`` (only packets sent from the range) or ``"to"``. ``peer_ports`` limits the far
    end to a range too (recommended: other processes' RTP stays out). ``snaplen`` 0 keeps whole
    packets; 64 keeps the RTP header only (enough for stream stats, much less disk at scale).
    """

    keep_workdir_on_exit = True  # the capture file is analysed after the block; cleanup() removes it

    def __init__(
        self,
        port_lo: int,
        port_hi: int,
        pcap: Path | None = None,
        *,
        interface: str = "lo",
        even_only: bool = True,
        direction: str = "both",
        snaplen: int = 0,
        buffer_mib: int = 64,
        duration_s: float | None = None,
        lifetime: float = 900.0,
        peer_ports: tuple[int, int] | None = None,
        cpus: str | None = None,
    ) -> None:
        self.port_lo = port_lo
        self.cpus = cpus
        self.peer_ports = peer_ports
        self.port_hi = port_hi
        self._tmp = WorkDir("tshark-") if pcap is None else None
        self.pcap = pcap if pcap is not None else self._tmp.path / "capture.pcapng"  # type: ignore[union-attr]
        self.workdir = self.pcap.parent
        self.interface = interface
        self.even_only = even_only
        self.direction = direction
        self.snaplen = snaplen
        self.buffer_mib = buffer_mib
        self.duration_s = duration_s
        self.lifetime = lifetime
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: CaptureSummary | None = None
        self._name = f"tshark-{os.getpid()}-{id(self)}"

    def capture_filter(self) -> str:
        """BPF: UDP with one end in our range (even ports only, if asked), the other end in ``peer_ports``.

        Naming the far end too keeps another process's RTP out of the capture when its port range
        overlaps ours (a second daemon on the same machine, another test worker).
        """
        lo, hi = self.port_lo, self.port_hi

        def ours(end: str, offset: int) -> str:
            even = f" and udp[{offset}:2] & 1 = 0" if self.even_only else ""
            return f"{end} portrange {lo}-{hi}{even}"

        def theirs(end: str) -> str:
            return "" if self.peer_ports is None else f" and {end} portrange {self.peer_ports[0]}-{self.peer_ports[1]}"

        sent = f"({ours('src', 0)}{theirs('dst')})"
        received = f"({ours('dst', 2)}{theirs('src')})"
        if self.direction == "from":
            return f"udp and {sent}"
        if self.direction == "to":
            return f"udp and {received}"
        return f"udp and ({sent} or {received})"

    def command(self) -> list[str]:
        argv = [
            "tshark",
            "-n",
            "-i",
            self.interface,
            "-f",
            self.capture_filter(),
            "-w",
            str(self.pcap),
            "-B",
            str(self.buffer_mib),
            "-q",
        ]
        if self.snaplen:
            argv += ["-s", str(self.snaplen)]
        if self.duration_s is not None:
            argv += ["-a", f"duration:{max(1, round(self.duration_s))}"]
        if self.cpus is not None:
            argv = ["taskset", "-c", self.cpus, *argv]  # dumpcap, its child, inherits the mask
        return argv

    def start(self, ready_timeout: float = 20.0) -> Self:
        self.proc = _spawn(self.command(), workdir=self.workdir, name=self._name, lifetime=self.lifetime)
        # tshark (through dumpcap) writes "Capturing on 'Loopback: lo'" to stderr once the capture runs.
        deadline = time.monotonic() + ready_timeout
        while "Capturing on" not in self.stderr_text():
            if self.proc.poll() is not None:
                raise PeerError(f"tshark exited ({self.proc.returncode}): {self.stderr_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"tshark did not start capturing within {ready_timeout:g}s: {self.stderr_text()}")
            time.sleep(0.05)
        time.sleep(0.2)  # the message comes just before the first read; leave dumpcap a moment
        return self

    def stderr_text(self) -> str:
        return _read(self.workdir / f"{self._name}.err")

    def wait(self, timeout: float) -> CaptureSummary:
        """For a capture with ``duration_s``: wait for it to end by itself."""
        if self.proc is None:
            raise PeerError("tshark not started")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.stop()

    def stop(self) -> CaptureSummary:
        """SIGINT (tshark flushes the file and prints its counts), then collect ``N packets captured``."""
        if self.proc is None:
            raise PeerError("tshark not started")
        time.sleep(0.3)  # let the last packets in flight reach the capture
        _end_process(self.proc, signal.SIGINT, 15)
        text = self.stderr_text()
        m = re.search(r"(\d+) packets? captured", text)
        d = re.search(r"(\d+) packets? dropped", text)
        self.summary = CaptureSummary(int(m.group(1)) if m else 0, int(d.group(1)) if d else 0, text)
        return self.summary

    def streams(self, port_lo: int | None = None, port_hi: int | None = None) -> list[StreamStats]:
        return rtp_streams(self.pcap, port_lo or self.port_lo, port_hi or self.port_hi)

    def packets(self) -> list[RtpPacket]:
        return rtp_packets(self.pcap, self.port_lo, self.port_hi)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class UdpSink:
    """Bound UDP sockets that read and count what arrives: the RTP ports a SIPp caller offers but never opens.

    Without it, RTP sent to such a port draws ICMP port-unreachable, which a sender on a connected UDP
    socket sees as errors; with it the far end behaves like a phone that listens.
    """

    def __init__(self, ports: Sequence[int], host: str = LOCALHOST) -> None:
        self.ports = list(ports)
        self.host = host
        self.counts: dict[int, int] = dict.fromkeys(self.ports, 0)
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        import selectors

        sel = selectors.DefaultSelector()
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((self.host, port))
            s.setblocking(False)
            self._socks.append(s)
            sel.register(s, selectors.EVENT_READ, port)

        def loop() -> None:
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    while True:
                        try:
                            sock.recv(2048)
                        except (BlockingIOError, OSError):
                            break
                        self.counts[key.data] += 1
            sel.close()

        self._thread = threading.Thread(target=loop, name="udp-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[int, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks:
            s.close()
        return self.counts

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# sipsak


@dataclass(frozen=True)
class SipsakResult:
    returncode: int
    output: str
    status: int | None


def sipsak_options(port: int, host: str = LOCALHOST, *, user: str = "ivr", timeout: float = 10.0) -> SipsakResult:
    """``sipsak -s sip:USER@HOST:PORT -H HOST -vv``: one OPTIONS.

    sipsak(1): exit 0 = a 200 was received, 1 = something other than 1xx/2xx, 2 = local error (bad
    option, unresolvable name), 3 = remote error (ICMP error, no answer). ``status`` is the final
    response code sipsak printed, if any.
    """
    proc = subprocess.run(
        ["timeout", "-k", "2", f"{timeout:g}", "sipsak", "-s", f"sip:{user}@{host}:{port}", "-H", host, "-vv"],
        capture_output=True,
        text=True,
        check=False,
    )
    output = proc.stdout + proc.stderr
    codes = re.findall(r"^SIP/2\.0 (\d{3})", output, re.MULTILINE)
    finals = [int(c) for c in codes if int(c) >= 200]
    return SipsakResult(proc.returncode, output, finals[-1] if finals else None)


# --------------------------------------------------------------------------------------------------
# misc


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): the value below which ``pct``% of the values lie."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(np.ceil(pct / 100.0 * len(ordered))))
    return float(ordered[rank - 1])
