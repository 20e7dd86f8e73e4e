"""Kamailio (Debian package ``kamailio``, 5.6) as a real peer: the dispatcher in front of ivr nodes, on loopback.

:class:`Kamailio` runs the *same* configuration file the containers use (docker/kamailio/kamailio.cfg): that file
keeps every address, port, path and timer in ``#!define`` settings with the compose values as defaults, and this
driver overrides them on the command line (``kamailio -A NAME=VALUE``). What the driver changes is only where
things are (127.0.0.1, free ports, a private work directory) and how fast the probe runs, never the routing logic.

Facts about kamailio 5.6.3 (Debian 12) this relies on:

- ``-DD -E``: stays in the foreground (no daemonising) and logs to stderr; ``-Y DIR`` moves its runtime directory
  and ``-P FILE`` its pid file out of /run, ``-w DIR`` its working directory, so it runs without root paths;
- ``-A 'NAME=VALUE'`` adds a preprocessor define before the file is read; the file's ``#!ifndef`` blocks give way;
- SIGTERM to the main process ends every worker; ``kamcmd -s unix:SOCK dispatcher.list`` prints each destination
  as ``URI: ...`` then ``FLAGS: XY`` (X: A active, I inactive, T trying, D disabled; Y: P probing, X not);
- a destination that was never probed starts as active (flags 0 in the list file).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from peers import (
    LOCALHOST,
    REPO_ROOT,
    IvrDaemon,
    PeerError,
    PeerProcess,
    WorkDir,
    _end_process,
    _spawn,
    _tail,
    free_udp_port,
    have,
    sip_options_ping,
)

KAMAILIO_CFG = REPO_ROOT / "docker" / "kamailio" / "kamailio.cfg"
KAMAILIO_BIN = "kamailio"
KAMCMD_BIN = "kamcmd"
DISPATCHER_SET = 1


def kamailio_installed() -> bool:
    """True when both kamailio and kamcmd (same Debian package) are on PATH (or in /usr/sbin)."""
    return _which(KAMAILIO_BIN) is not None and _which(KAMCMD_BIN) is not None


def _which(binary: str) -> str | None:
    if have(binary):
        return binary
    sbin = Path("/usr/sbin") / binary
    return str(sbin) if sbin.exists() else None


@dataclass(frozen=True)
class Destination:
    """One dispatcher destination as ``dispatcher.list`` reports it."""

    uri: str
    flags: str

    @property
    def active(self) -> bool:
        return self.flags.startswith("A")

    @property
    def inactive(self) -> bool:
        return self.flags.startswith("I")


def parse_dispatcher_list(text: str) -> dict[str, Destination]:
    """``kamcmd dispatcher.list`` output -> destination URI -> :class:`Destination`."""
    out: dict[str, Destination] = {}
    for uri, flags in re.findall(r"URI:\s*(\S+)\s*\n\s*FLAGS:\s*(\S+)", text):
        out[uri] = Destination(uri, flags)
    return out


class Kamailio(PeerProcess):
    """Kamailio on 127.0.0.1 with the dispatcher in front of ``nodes`` (``host:port`` of ivr daemons).

    >>> with IvrDaemon() as a, IvrDaemon() as b, Kamailio([a.sip_target, b.sip_target]) as proxy:
    ...     Sipp("uac", proxy.sip_target, calls=4).run()
    ...     proxy.wait_inactive(a.sip_target, timeout=5)

    Ready when the farm answers OPTIONS with 200, which the configuration does while at least one node is active.
    ``ping_interval`` etc. map to the configuration's DS_* settings.
    """

    stderr_file = "kamailio.err"

    def __init__(
        self,
        nodes: Sequence[str],
        *,
        config: Path = KAMAILIO_CFG,
        ping_interval: int = 1,
        probing_threshold: int = 1,
        inactive_threshold: int = 1,
        fr_timer_ms: int = 1000,
        children: int = 2,
        log_level: int = 2,
        ready_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        lifetime: float = 300.0,
    ) -> None:
        self.nodes = list(nodes)
        self.config = config
        self.ping_interval = ping_interval
        self.probing_threshold = probing_threshold
        self.inactive_threshold = inactive_threshold
        self.fr_timer_ms = fr_timer_ms
        self.children = children
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.lifetime = lifetime
        self.host = LOCALHOST
        self.sip_port = 0
        self.workdir: Path | None = None
        self._tmp: WorkDir | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._final_stderr: str | None = None

    # -- lifecycle

    @property
    def ctl_socket(self) -> str:
        assert self.workdir is not None
        return f"unix:{self.workdir / 'kamailio_ctl'}"

    def defines(self) -> dict[str, str]:
        """The ``-A`` settings that move the container configuration onto loopback."""
        assert self.workdir is not None
        return {
            "SIP_IP": self.host,
            "SIP_PORT": str(self.sip_port),
            "DS_LIST_FILE": f'"{self.workdir / "dispatcher.list"}"',
            "DS_PING_INTERVAL": str(self.ping_interval),
            "DS_PROBING_THRESHOLD": str(self.probing_threshold),
            "DS_INACTIVE_THRESHOLD": str(self.inactive_threshold),
            "TM_FR_TIMER_MS": str(self.fr_timer_ms),
            "CTL_SOCKET": f'"{self.ctl_socket}"',
            "CHILDREN": str(self.children),
            "LOG_LEVEL": str(self.log_level),
        }

    def command(self, *, check: bool = False) -> list[str]:
        assert self.workdir is not None
        binary = _which(KAMAILIO_BIN)
        if binary is None:
            raise PeerError("kamailio not installed (apt-get install -y kamailio)")
        argv = [binary, "-c" if check else "-DD", "-f", str(self.config)]
        if not check:
            argv += ["-E", "-Y", str(self.workdir / "run"), "-P", str(self.workdir / "kamailio.pid")]
            argv += ["-w", str(self.workdir), "-m", "32", "-M", "4"]
        for name, value in self.defines().items():
            argv += ["-A", f"{name}={value}"]
        return argv

    def write_dispatcher_list(self) -> Path:
        """Set 1: every node, flags 0 (active until a probe fails), as docker/kamailio/dispatcher.list does."""
        assert self.workdir is not None
        path = self.workdir / "dispatcher.list"
        lines = [f"{DISPATCHER_SET} sip:{node} 0 0" for node in self.nodes]
        path.write_text("# setid destination flags priority\n" + "\n".join(lines) + "\n")
        return path

    def start(self) -> Self:
        self._tmp = WorkDir("kamailio-")
        self.workdir = self._tmp.path
        (self.workdir / "run").mkdir()
        self.sip_port = free_udp_port(self.host, also_tcp=True)
        self.write_dispatcher_list()
        self.proc = _spawn(self.command(), workdir=self.workdir, name="kamailio", lifetime=self.lifetime)
        deadline = time.monotonic() + self.ready_timeout
        last: int | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                break
            last = sip_options_ping(self.host, self.sip_port, timeout=0.5)
            if last == 200:
                return self
            time.sleep(0.1)
        text = self.stderr_text()
        self.stop()
        raise PeerError(
            f"kamailio not ready on {self.sip_target} within {self.ready_timeout:g}s (last OPTIONS answer: {last})\n"
            f"--- kamailio stderr ---\n{_tail(text)}"
        )

    def stop(self) -> int:
        """SIGTERM (every worker ends with the main process), SIGKILL after ``stop_timeout``."""
        if self.proc is None:
            raise PeerError("kamailio not started")
        self.returncode = _end_process(self.proc, signal.SIGTERM, self.stop_timeout)
        return self.returncode

    # -- what it knows

    @property
    def sip_target(self) -> str:
        return f"{self.host}:{self.sip_port}"

    def dispatcher_list(self) -> dict[str, Destination]:
        """Every destination's state, from ``kamcmd dispatcher.list`` over the control socket."""
        kamcmd = _which(KAMCMD_BIN)
        if kamcmd is None:
            raise PeerError("kamcmd not installed (apt-get install -y kamailio)")
        proc = subprocess.run(
            ["timeout", "-k", "2", "5", kamcmd, "-s", self.ctl_socket, "dispatcher.list"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise PeerError(f"kamcmd dispatcher.list failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return parse_dispatcher_list(proc.stdout)

    def destination(self, node: str) -> Destination:
        states = self.dispatcher_list()
        uri = f"sip:{node}"
        if uri not in states:
            raise PeerError(f"{uri} is not in the dispatcher list: {states}")
        return states[uri]

    def wait_state(self, node: str, *, active: bool, timeout: float) -> Destination:
        """Poll ``dispatcher.list`` until ``node`` is active (or inactive); PeerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        dest = self.destination(node)
        while (dest.active if active else dest.inactive) is False:
            if time.monotonic() > deadline:
                want = "active" if active else "inactive"
                raise PeerError(f"sip:{node} not {want} within {timeout:g}s: {dest}\n{_tail(self.stderr_text())}")
            if not self.alive():
                raise PeerError(f"kamailio exited ({self.proc and self.proc.returncode})\n{self.stderr_text()}")
            time.sleep(0.1)
            dest = self.destination(node)
        return dest

    def describe(self) -> str:
        return f"kamailio on {self.sip_target} -> {', '.join(self.nodes)}\n{_tail(self.stderr_text())}"


# --------------------------------------------------------------------------------------------------
# the ivr daemon's admin API (IvrDaemon gives it a free port: read it from the "ivr ready" log line)


def admin_address(ivr: IvrDaemon) -> str:
    """``host:port`` of the daemon's admin API, from its ``ivr ready ... admin=HOST:PORT`` log line."""
    for record in ivr.log_records("admin"):
        value = record["admin"]
        if value != "off" and ":" in value:
            return value
    raise PeerError(f"the daemon logged no admin address\n{ivr.describe()}")


def admin_request(ivr: IvrDaemon, method: str, path: str, token: str | None, timeout: float = 5.0) -> tuple[int, str]:
    """One request to the daemon's admin API: (status, body). HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(
        f"http://{admin_address(ivr)}{path}", method=method, data=b"" if method == "POST" else None
    )
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def admin_json(ivr: IvrDaemon, method: str, path: str, token: str | None) -> tuple[int, object]:
    status, body = admin_request(ivr, method, path, token)
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body
