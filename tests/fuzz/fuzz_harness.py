"""Fuzz the whole daemon: an :class:`~ivr.daemon.server.IvrServer` on virtual time, fed mutated SIP (and some RTP)
from the in-memory network, with the daemon's invariants checked after every message.

The target (:class:`Target`) is the daemon as ``ivr serve`` runs it, built the way :class:`~ivr.simulator.lab.IvrLab`
builds one on a :class:`~ivr.simulator.virtual.VirtualTimeLoop`: SIP over UDP at 127.0.0.1:5060 on the virtual network,
RTP sockets from ``loop.network.socket_factory`` (a small port range, so a leak shows), no admin API, the CDR in a
temporary folder, speech off. The fuzzer sends from 127.0.0.1:5070 (SIP) and 127.0.0.1:6000 (RTP). Every datagram
the SIP driver sends is seen at ``driver.transmit`` (wherever it goes: a Via naming another host too). The daemon's
random tags, branches, SSRCs and session ids come from a seeded generator while the target runs, so a campaign is
the same bytes each time it runs with the same seed.

A campaign (:class:`Campaign`) is episodes of messages. A message is either a correct next step of a dialog the
fuzzer opened (the ACK of a 200, a BYE, INFO, a re-INVITE, a CANCEL of a pending INVITE, the 200 to the daemon's BYE,
an RTP packet or an RFC 4733 key to the call's port) or a seed with fresh identifiers, and then, most of the time,
1-4 mutations (:mod:`tests.fuzz.fuzz_mutator`). Between messages the virtual clock moves 10 ms to 10 s.

Checked after every message (:meth:`Target.check_step`):

* nothing reached the loop's exception handler; nothing was logged at error level, with a traceback or ``bug:``;
* an INVITE that ``parse_message`` accepts got a final response before the next message (every INVITE is answered
  synchronously: routing, admission, SDP and re-INVITEs do not wait). Exempt, with the reason: an INVITE whose
  transaction already exists in the endpoint (a retransmission: the transaction answers it with its last response,
  or absorbs it once ACKed, RFC 3261 17.2.1 / RFC 6026), and a message the source gate dropped (rate limit);
* the ``ivr_active_calls`` gauge equals the calls up plus the calls answered with our offer and waiting for the ACK
  (both were counted by ``CallRecords.answered``); the RTP ports in use equal the calls that hold one.

Checked at the end of every episode, after ``calls.max_call_seconds`` + 70 virtual seconds with no input but the
answers to the daemon's own requests (:meth:`Target.check_quiet`): no call, no call being answered or placed, no RTP
port in use, the gauge at 0, no dialog, leg or transaction left in the endpoint, no stream on the media clock, no
virtual socket beyond the daemon's SIP socket and the fuzzer's, no task beyond those running when the daemon had
started, and (when measured) memory back near where it was.

A violation keeps the messages of its episode; :func:`minimise` replays them on a fresh daemon and shrinks them to a
short reproducer, which :func:`save_reproducer` writes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ivr.config import load_config
from ivr.daemon.server import IvrServer
from ivr.media.rtp import RtpPacket
from ivr.simulator.virtual import VirtualTimeLoop
from ivr.sip.endpoint import Transmit
from ivr.sip.errors import SipError
from ivr.sip.message import Request, Response, parse_message
from ivr.sip.transaction import server_key
from tests.fuzz.fuzz_mutator import Message, Mutator, Pool, choose_count
from tests.fuzz.fuzz_seeds import BODIES, INVITE_BODIES, RESPONSE_200_TO_BYE, SEEDS, Seed, fill

__all__ = ["Campaign", "CampaignResult", "Options", "Target", "Violation", "minimise", "run_campaign"]

REPO = Path(__file__).resolve().parents[2]
DAEMON = ("127.0.0.1", 5060)
CLIENT = ("127.0.0.1", 5070)
CLIENT_RTP = ("127.0.0.1", 6000)
TTAG_MARK = "@@TTAG:{}@@"
"""In a kept message, the to-tag the daemon gave the fuzzer's INVITE with that Call-ID (tags differ on replay)."""
_MARK_RE = re.compile(rb"@@TTAG:(.*?)@@")
_M_AUDIO_RE = re.compile(rb"m=audio (\d+) ")


@dataclass(frozen=True)
class Options:
    flows: bool = False
    """True: the example config's routes (configs/flows); False: no routes, the welcome application."""
    rtp_ports: str = "20000-20039"
    """20 even ports: 20 calls at once at most, so a leaked port shows within an episode."""
    max_call_seconds: float = 20.0
    hangup_after_prompt: bool = True
    episode: int = 500
    """Messages per episode; each ends with the quiet period and the end checks."""
    memory: bool = False
    """Measure memory with tracemalloc (slower: about 2x)."""
    memory_bound: int = 24 * 1024 * 1024
    """Bytes the traced memory may grow in a campaign over what it was after the first episode."""


@dataclass
class Violation:
    kind: str
    detail: str
    episode: int
    index: int  # the message's index in its episode (-1: found by the end-of-episode checks)
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind} (episode {self.episode}, message {self.index}): {self.detail}"


class _Secrets:
    """``secrets`` for the daemon's modules while a target runs: the same values for the same seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed ^ 0x5EC2E75)

    def token_hex(self, nbytes: int = 16) -> str:
        return self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def token_bytes(self, nbytes: int = 16) -> bytes:
        return self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big")

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)


_SECRET_USERS = ("ivr.sip.endpoint", "ivr.sip.transaction", "ivr.daemon.media_session", "ivr.media.stream")


@contextlib.contextmanager
def deterministic_secrets(seed: int) -> Iterator[None]:
    import importlib

    shim = _Secrets(seed)
    saved = []
    for name in _SECRET_USERS:
        module = importlib.import_module(name)
        saved.append((module, module.secrets))  # type: ignore[attr-defined]
        module.secrets = shim  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in saved:
            module.secrets = original  # type: ignore[attr-defined]


class _LogCapture:
    """structlog while fuzzing: error-level events, tracebacks and ``bug:`` lines are kept; the rest is counted and
    dropped (a campaign logs hundreds of thousands of lines otherwise)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        """The first of each warning, with its fields."""
        self._saved: dict[str, Any] | None = None
        self._handler: logging.Handler | None = None

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> Any:
        text = str(event.get("event", ""))
        if method in ("error", "critical", "exception", "fatal") or event.get("exc_info") or "bug:" in text or (
            "Traceback" in text
        ):
            self.errors.append(f"{method}: {text} {_short({k: v for k, v in event.items() if k != 'event'})}")
        else:
            self.warnings[text] += 1
            if text not in self.examples:
                self.examples[text] = _short({k: v for k, v in event.items() if k != "event"})
        raise structlog.DropEvent

    def install(self) -> None:
        self._saved = structlog.get_config()
        structlog.configure(
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        capture = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                capture.errors.append(f"logging {record.name}: {record.getMessage()}")

        self._handler = _Handler(logging.ERROR)
        logging.getLogger().addHandler(self._handler)

    def uninstall(self) -> None:
        if self._saved is not None:
            structlog.configure(**self._saved)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)


def _short(value: object, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Loop(VirtualTimeLoop):
    """The virtual-time loop, resolving no names: a Via or Contact naming a host makes the driver ask; the answer is
    'no such name' at once, not a real DNS query in a worker thread (slow, and not the same twice)."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise socket.gaierror(socket.EAI_NONAME, "the fuzzer's loop resolves no names")


class _Sink(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


@dataclass
class _Dialog:
    """A call the fuzzer opened."""

    index: int
    call_id: str
    ftag: str
    seed: Seed
    invite_cseq: int
    invite_branch: str
    invite: bytes
    late: bool
    ttag: str | None = None
    state: str = "calling"  # calling, answered, confirmed, ended
    cseq: int = 1
    rtp_port: int | None = None
    rtp_seq: int = 0


class Target:
    """The daemon on the running virtual loop, a fuzz client, and the invariants."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.server: IvrServer | None = None
        self.out: list[Transmit] = []
        self.logs = _LogCapture()
        self.loop_errors: list[str] = []
        self._baseline_tasks: set[asyncio.Task[Any]] = set()
        self._baseline_sockets = 0
        self._client: asyncio.DatagramTransport | None = None
        self._rtp: Any = None
        self.memory_start: int | None = None
        self.memory_peak = 0
        self._gauge_off = 0.0  # how far the gauge and the ports were off after the last message: each new
        self._ports_off = 0  # discrepancy is reported once, not again after every message that follows

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        overrides: dict[str, Any] = {
            "sip.listen": f"{DAEMON[0]}:{DAEMON[1]}",
            "sip.transports": ["udp"],
            "admin.listen": None,
            "cdr.url": f"sqlite:///{self.workdir / 'cdr.db'}",
            "flows.watch": False,
            "media.rtp_ports": self.options.rtp_ports,
            "speech.enabled": False,
            "calls.max_call_seconds": self.options.max_call_seconds,
            "calls.hangup_after_prompt": self.options.hangup_after_prompt,
            "calls.recordings_dir": str(self.workdir / "recordings"),
            "security.max_messages_per_source": 1e9,
        }
        if not self.options.flows:
            overrides["routes"] = []
        config = load_config(REPO / "configs" / "ivr.yaml", overrides)
        self.logs.install()
        loop.set_exception_handler(self._loop_exception)
        server = IvrServer(config, socket_factory=loop.network.socket_factory)
        await server.start()
        self.server = server
        transmit = server.driver.transmit

        def tap(out: Transmit) -> None:
            self.out.append(out)
            transmit(out)

        server.driver.transmit = tap  # type: ignore[method-assign]
        self._client, _ = await loop.create_datagram_endpoint(_Sink, local_addr=CLIENT)
        self._rtp = loop.network.socket()
        self._rtp.bind(CLIENT_RTP)
        await asyncio.sleep(0.1)
        self._baseline_tasks = set(asyncio.all_tasks())
        self._baseline_sockets = len(loop.network._sockets)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.server is not None:
                await self.server.close()
            if self._client is not None:
                self._client.close()
            if self._rtp is not None:
                self._rtp.close()
        finally:
            loop.set_exception_handler(None)
            self.logs.uninstall()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.loop_errors.append(f"{context.get('message')}: {exc!r}" if exc else str(context.get("message")))

    # ---- sending ----

    def send_sip(self, data: bytes) -> None:
        assert self._client is not None
        self._client.sendto(data, DAEMON)

    def send_rtp(self, data: bytes, port: int) -> None:
        self._rtp.sendto(data, (DAEMON[0], port))

    def drain_rtp(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self._rtp.recvfrom(2048)

    # ---- invariants ----

    @property
    def srv(self) -> IvrServer:
        assert self.server is not None
        return self.server

    def gauge(self) -> float:
        return self.srv.metrics.registry.get_sample_value("ivr_active_calls") or 0.0

    def take_errors(self) -> list[tuple[str, str]]:
        found = [("loop_exception", e) for e in self.loop_errors] + [("log_error", e) for e in self.logs.errors]
        self.loop_errors.clear()
        self.logs.errors.clear()
        return found

    def check_step(self, sent: bytes, expect_final: tuple[str, int, str | None] | None, out: list[Transmit],
                   dropped_before: int) -> list[tuple[str, str]]:  # fmt: skip
        """The invariants after one message; ``expect_final``: (Call-ID, CSeq number, branch) of a parsed INVITE
        that must have had a final response in ``out``."""
        problems = self.take_errors()
        srv = self.srv
        if expect_final is not None and srv.gate.dropped == dropped_before:
            call_id, number, branch = expect_final
            if not any(_is_final_for(t.data, call_id, number, branch) for t in out):
                statuses = [_status(t.data) for t in out]
                problems.append(("no_final_response", f"INVITE Call-ID {call_id!r} CSeq {number} got {statuses}"))
        controller = srv.controller
        held = len(controller.calls) + len(controller._answering)
        gauge_off = self.gauge() - held
        if gauge_off != self._gauge_off and gauge_off != 0:
            problems.append(("gauge", f"ivr_active_calls={self.gauge():g}, calls={len(controller.calls)} "
                                      f"answering={len(controller._answering)}"))  # fmt: skip
        self._gauge_off = gauge_off
        with_port = held + len(controller._placing) + _handoff_ports(srv)
        ports_off = srv.ports.in_use - with_port
        if ports_off != self._ports_off and ports_off != 0:
            problems.append(("ports", f"in_use={srv.ports.in_use}, calls holding one={with_port}"))
        self._ports_off = ports_off
        return problems

    def check_quiet(self) -> list[tuple[str, str]]:
        """The invariants once everything had time to finish."""
        srv = self.srv
        problems = self.take_errors()
        controller, endpoint = srv.controller, srv.endpoint
        left = {
            "calls": len(controller.calls),
            "answering": len(controller._answering),
            "placing": len(controller._placing),
            "ports_in_use": srv.ports.in_use,
            "dialogs": len(endpoint._dialogs),
            "legs": len(endpoint._legs),
            "server_transactions": len(endpoint._server),
            "client_transactions": len(endpoint._client),
            "clock_streams": len(srv.clock._streams),
        }
        leftovers = {k: v for k, v in left.items() if v}
        if leftovers:
            problems.append(("leftovers", f"after the quiet period: {leftovers}"))
        if self.gauge() != 0:
            problems.append(("gauge", f"ivr_active_calls={self.gauge():g} with {len(controller.calls)} calls"))
        loop = asyncio.get_running_loop()
        sockets = len(loop.network._sockets)  # type: ignore[attr-defined]
        if sockets != self._baseline_sockets:
            problems.append(("sockets", f"{sockets} virtual sockets bound, {self._baseline_sockets} at the start"))
        tasks = set(asyncio.all_tasks()) - self._baseline_tasks - {asyncio.current_task()}
        if tasks:
            problems.append(("tasks", f"{len(tasks)} tasks beyond the daemon's own: "
                                      f"{_short([t.get_coro() for t in tasks])}"))  # fmt: skip
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            self.memory_peak = max(self.memory_peak, peak)
            if self.memory_start is None:
                self.memory_start = current
            elif current - self.memory_start > self.options.memory_bound:
                grown, bound = (current - self.memory_start) / 1e6, self.options.memory_bound / 1e6
                problems.append(("memory", f"traced memory grew {grown:.1f} MB in the campaign (bound {bound:.0f} MB)"))
        return problems


def _handoff_ports(server: IvrServer) -> int:
    handoff = server.handoff
    return len(getattr(handoff, "_queue_legs", {}))


def _parse(data: bytes) -> Request | Response | None:
    try:
        return parse_message(data)
    except SipError as exc:
        partial = exc.partial
        return partial if isinstance(partial, Request | Response) else None


def _status(data: bytes) -> int | str:
    msg = _parse(data)
    if isinstance(msg, Response):
        return msg.status
    return msg.method if isinstance(msg, Request) else "?"


def _is_final_for(data: bytes, call_id: str, number: int, branch: str | None) -> bool:
    msg = _parse(data)
    if not isinstance(msg, Response) or msg.status < 200:
        return False
    try:
        cseq = msg.cseq
        if msg.call_id != call_id or cseq.number != number or cseq.method != "INVITE":
            return False
        return branch is None or msg.top_via.branch == branch
    except SipError:
        return False


# ---- the campaign -------------------------------------------------------------------------------------------------


@dataclass
class CampaignResult:
    seed: int
    options: Options
    messages: int = 0
    mutations: int = 0
    rtp_packets: int = 0
    episodes: int = 0
    invites_checked: int = 0
    retransmissions: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    mutation_kinds: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    warning_examples: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    calls_answered: int = 0
    virtual_seconds: float = 0.0
    memory_peak: int = 0


class Campaign:
    """Generates the messages of one campaign (deterministic from ``seed``) and runs them against a target."""

    def __init__(self, seed: int, options: Options) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.options = options
        self.mutator = Mutator()
        self.pool = Pool()
        self.dialogs: dict[str, _Dialog] = {}
        self.order: list[_Dialog] = []  # this episode's dialogs, by index (the to-tag markers name them)
        self.daemon_requests: list[Request] = []
        self.serial = 0
        self.by_seed = {s.name: s for s in SEEDS}
        self.fresh = [s for s in SEEDS if not s.in_dialog]
        self.in_dialog = [s for s in SEEDS if s.in_dialog]

    # ---- what to send next ----

    def _ids(self) -> tuple[str, str, str]:
        self.serial += 1
        n = self.serial
        return f"fz{self.seed}-{n}@127.0.0.1", f"ft{n:x}", f"z9hG4bKfz{self.seed}x{n}"

    def _values(self, d: _Dialog | None, seed: Seed, *, branch: str | None = None) -> dict[str, str]:
        call_id, ftag, new_branch = self._ids()
        values = {"HOST": CLIENT[0], "PORT": str(CLIENT[1]), "RTP": str(CLIENT_RTP[1]), "CALLID": call_id,
                  "FTAG": ftag, "BRANCH": branch or new_branch, "CSEQ": str(self.rng.randint(1, 20)),
                  "TTAG": ""}  # fmt: skip
        if d is not None:
            values.update(CALLID=d.call_id, FTAG=d.ftag, TTAG=d.ttag or "")
        body_name = seed.body
        if not body_name:  # None: the text has its own body; "": none
            values["BODY"] = ""
        else:
            if seed.method == "INVITE" and not seed.in_dialog and self.rng.random() < 0.3:
                body_name = self.rng.choice(INVITE_BODIES)
            values["BODY"] = BODIES[body_name]
        return values

    def _render(self, seed: Seed, values: dict[str, str]) -> bytes:
        text = seed.text
        if seed.body is None:  # the body is in the text itself
            values = {k: v for k, v in values.items() if k != "BODY"}
            text = text.replace("$BODY", "")
        return fill(text, values).replace("\n", "\r\n").encode("utf-8")

    def next_message(self) -> tuple[str, bytes, _Dialog | None]:
        """('sip' | 'rtp:<port>', bytes, the dialog it belongs to)."""
        rng = self.rng
        if self.daemon_requests and rng.random() < 0.6:
            req = self.daemon_requests.pop(0)
            return "sip", _answer_daemon_request(req), self.dialogs.get(_call_id(req))
        live = [d for d in self.order if d.state != "ended"]
        unacked = [d for d in live if d.state == "answered"]
        if unacked and rng.random() < 0.55:
            d = rng.choice(unacked)
            seed = self.by_seed["ack-late-answer" if d.late else "ack"]
            values = self._values(d, seed)
            values["CSEQ"] = str(d.invite_cseq)
            return "sip", self._render(seed, values), d
        confirmed = [d for d in live if d.state == "confirmed"]
        roll = rng.random()
        if confirmed and roll < 0.12:
            d = rng.choice(confirmed)
            if d.rtp_port is None:
                return self._fresh()
            return f"rtp:{d.rtp_port}", _rtp_packet(rng, d), d
        if live and roll < 0.55:
            d = rng.choice(live)
            if d.state == "calling" and rng.random() < 0.3:
                # CANCEL (same branch and CSeq number as the INVITE) or the INVITE again (a retransmission)
                if rng.random() < 0.6:
                    seed = self.by_seed["cancel"]
                    values = self._values(d, seed, branch=d.invite_branch)
                    values["CSEQ"] = str(d.invite_cseq)
                    return "sip", self._render(seed, values), d
                return "sip", d.invite, d
            seed = rng.choice(self.in_dialog)
            values = self._values(d, seed)
            d.cseq += rng.choice((1, 1, 1, 0, -1, 5))
            values["CSEQ"] = str(d.invite_cseq if seed.method == "ACK" else max(d.cseq, 0))
            return "sip", self._render(seed, values), d
        return self._fresh()

    def _fresh(self) -> tuple[str, bytes, _Dialog | None]:
        rng = self.rng
        seed = rng.choice(self.fresh)
        values = self._values(None, seed)
        if seed.in_dialog is False and seed.method == "INVITE":
            cseq = int(values["CSEQ"])
            d = _Dialog(len(self.order), values["CALLID"], values["FTAG"], seed, cseq, values["BRANCH"], b"",
                        late=seed.name == "invite-late-offer", cseq=cseq)  # fmt: skip
            data = self._render(seed, values)
            d.invite = data
            self.dialogs[d.call_id] = d
            self.order.append(d)
            self.pool.add(self.pool.call_ids, d.call_id)
            self.pool.add(self.pool.tags, d.ftag)
            self.pool.add(self.pool.branches, d.invite_branch)
            return "sip", data, d
        return "sip", self._render(seed, values), None

    def mutate(self, data: bytes) -> tuple[bytes, list[str]]:
        return self.mutator.mutate(data, self.rng, self.pool, choose_count(self.rng))

    # ---- what came back ----

    def observe(self, out: list[Transmit], result: CampaignResult) -> None:
        for t in out:
            msg = _parse(t.data)
            if isinstance(msg, Response):
                result.responses[msg.status] += 1
                try:
                    call_id, cseq = msg.call_id, msg.cseq
                except SipError:
                    continue
                d = self.dialogs.get(call_id)
                if d is None or cseq.method != "INVITE" or cseq.number != d.invite_cseq:
                    continue
                tag = _to_tag(msg)
                if 200 <= msg.status < 300 and d.state == "calling":
                    d.state = "answered"
                    d.ttag = tag
                    if tag:
                        self.pool.add(self.pool.tags, tag)
                    port = _M_AUDIO_RE.search(msg.body)
                    d.rtp_port = int(port.group(1)) if port else None
                elif msg.status >= 300 and d.state == "calling":
                    d.state = "ended"
            elif isinstance(msg, Request):
                with contextlib.suppress(SipError):
                    self.pool.add(self.pool.branches, msg.top_via.branch or "")
                if (msg.method == "BYE" or self.rng.random() < 0.5) and len(self.daemon_requests) < 64:
                    self.daemon_requests.append(msg)
                d = self.dialogs.get(_call_id(msg))
                if d is not None and msg.method == "BYE":
                    d.state = "ended"

    def sent(self, kind: str, data: bytes, d: _Dialog | None, result: CampaignResult) -> None:
        """Bookkeeping after ``data`` went out unmutated or mutated."""
        if kind != "sip":
            return
        msg = _parse(data)
        if not isinstance(msg, Request) or d is None:
            return
        with contextlib.suppress(SipError):
            self.pool.learn(Message.parse(data))
        if msg.method == "ACK" and d.state == "answered":
            d.state = "confirmed"
        elif (msg.method == "BYE" and d.state in ("answered", "confirmed")) or (
            msg.method == "CANCEL" and d.state == "calling"
        ):
            d.state = "ended"

    def mark(self, data: bytes) -> bytes:
        """``data`` with each dialog's to-tag (chosen by the daemon) replaced by a marker naming the dialog."""
        for d in self.order:
            if d.ttag:
                data = data.replace(d.ttag.encode(), TTAG_MARK.format(d.call_id).encode())
        return data

    def end_episode(self) -> None:
        self.dialogs.clear()
        self.order.clear()
        self.daemon_requests.clear()


def _call_id(msg: Request | Response) -> str:
    try:
        return msg.call_id
    except SipError:
        return ""


def _to_tag(msg: Request | Response) -> str | None:
    try:
        return msg.to.tag
    except SipError:
        return None


def _answer_daemon_request(req: Request) -> bytes:
    """The 200 a phone sends to the daemon's BYE (or any request it sends)."""
    try:
        vias = "\n".join(f"Via: {v}" for v in req.headers.values("Via"))
        text = fill(RESPONSE_200_TO_BYE.replace("BYE", req.method), {
            "VIAS": vias, "FROM": req.headers.get("From") or "", "TO": req.headers.get("To") or "",
            "CALLID": req.call_id, "CSEQ": str(req.cseq.number)})  # fmt: skip
    except SipError:
        return b""
    return text.replace("\n", "\r\n").encode("utf-8")


def _rtp_packet(rng: random.Random, d: _Dialog) -> bytes:
    d.rtp_seq += 1
    roll = rng.random()
    if roll < 0.5:  # RFC 4733 key
        key = rng.choice((0, 1, 2, 3, 5, 9, 10, 11, 16, 255))
        end = rng.random() < 0.5
        payload = bytes((key, (0x80 if end else 0) | 10, 0, rng.choice((0, 160, 800, 65535)) & 0xFF))
        payload = payload[:2] + rng.choice((160, 800, 1600, 65535)).to_bytes(2, "big")
        packet = RtpPacket(payload_type=rng.choice((101, 100, 126, 0)), sequence=d.rtp_seq & 0xFFFF,
                           timestamp=1000 * d.rtp_seq, ssrc=0x1234, payload=payload, marker=not end)  # fmt: skip
        data = packet.serialize()
    elif roll < 0.85:  # audio
        packet = RtpPacket(payload_type=rng.choice((0, 8, 18)), sequence=d.rtp_seq & 0xFFFF,
                           timestamp=160 * d.rtp_seq, ssrc=0x1234, payload=bytes([0xFF]) * 160)  # fmt: skip
        data = packet.serialize()
    else:  # junk
        data = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 11, 12, 13, 40, 300))))
    return data


def _step_seconds(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.75:
        return rng.choice((0.01, 0.02, 0.05))
    if roll < 0.97:
        return rng.choice((0.2, 0.5, 1.0))
    return rng.choice((3.0, 10.0))


async def _run(campaign: Campaign, target: Target, mutations: int, result: CampaignResult,
               episode_messages: list[list[tuple[str, bytes]]]) -> None:  # fmt: skip
    rng = campaign.rng
    loop = asyncio.get_running_loop()
    start = loop.time()
    episode = 0
    last_quiet: set[tuple[str, str]] = set()
    while result.mutations < mutations:
        messages: list[tuple[str, bytes]] = []
        episode_messages.append(messages)
        for index in range(campaign.options.episode):
            if result.mutations >= mutations:
                break
            kind, data, d = campaign.next_message()
            if not data:
                continue
            applied: list[str] = []
            if kind == "sip" and rng.random() < 0.8:
                data, applied = campaign.mutate(data)
                result.mutations += 1
                result.mutation_kinds.update(applied)
            messages.append((kind, campaign.mark(data)))
            problems = await _send_and_check(target, campaign, kind, data, d, result, rng)
            for problem_kind, detail in problems:
                result.violations.append(Violation(problem_kind, detail, episode, index, list(messages)))
        # the quiet period: only the answers to the daemon's own requests
        quiet_for = campaign.options.max_call_seconds + 70.0
        until = loop.time() + quiet_for
        while loop.time() < until:
            await asyncio.sleep(1.0)
            out, target.out[:] = list(target.out), []
            campaign.observe(out, result)
            target.drain_rtp()
            while campaign.daemon_requests:
                answer = _answer_daemon_request(campaign.daemon_requests.pop(0))
                if answer and rng.random() < 0.7:
                    messages.append(("sip", campaign.mark(answer)))
                    target.send_sip(answer)
        await asyncio.sleep(0)
        quiet = target.check_quiet()
        for problem_kind, detail in quiet:
            if (problem_kind, detail) not in last_quiet:  # something left over is reported once, when it appears
                result.violations.append(Violation(problem_kind, detail, episode, -1, list(messages)))
        last_quiet = set(quiet)
        campaign.end_episode()
        episode += 1
        result.episodes = episode
    result.virtual_seconds = loop.time() - start


async def _send_and_check(target: Target, campaign: Campaign, kind: str, data: bytes, d: _Dialog | None,
                          result: CampaignResult, rng: random.Random) -> list[tuple[str, str]]:  # fmt: skip
    srv = target.srv
    expect: tuple[str, int, str | None] | None = None
    result.messages += 1
    if kind == "sip":
        msg = _parse(data) if _parses(data) else None
        if isinstance(msg, Request) and msg.method == "INVITE":
            try:
                key = server_key(msg)
                if key in srv.endpoint._server:
                    result.retransmissions += 1
                else:
                    expect = (msg.call_id, msg.cseq.number, msg.top_via.branch)
                    result.invites_checked += 1
            except SipError:
                pass
        dropped = srv.gate.dropped
        target.send_sip(data)
    else:
        dropped = srv.gate.dropped
        target.send_rtp(data, int(kind.partition(":")[2]))
        result.rtp_packets += 1
    await asyncio.sleep(_step_seconds(rng))
    out, target.out[:] = list(target.out), []
    campaign.sent(kind, data, d, result)
    campaign.observe(out, result)
    target.drain_rtp()
    return target.check_step(data, expect, out, dropped)


def _run_on_loop(main: Any) -> None:
    with asyncio.Runner(loop_factory=_Loop) as runner:
        runner.run(main())


def _parses(data: bytes) -> bool:
    try:
        parse_message(data)
    except SipError:
        return False
    return True


def run_campaign(seed: int, mutations: int, options: Options | None = None) -> CampaignResult:
    """A campaign of ``mutations`` mutated messages (plus the unmutated steps between them) from ``seed``."""
    options = options or Options()
    result = CampaignResult(seed, options)
    campaign = Campaign(seed, options)
    episodes: list[list[tuple[str, bytes]]] = []

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="ivr-fuzz-") as tmp:
            target = Target(options, Path(tmp))
            await target.start()
            try:
                await _run(campaign, target, mutations, result, episodes)
            finally:
                result.warnings = target.logs.warnings
                result.warning_examples = target.logs.examples
                result.memory_peak = target.memory_peak
                await target.close()

    started_tracing = False
    if options.memory and not tracemalloc.is_tracing():
        tracemalloc.start()
        started_tracing = True
    try:
        with deterministic_secrets(seed):
            _run_on_loop(main)
    finally:
        if started_tracing:
            tracemalloc.stop()
    return result


# ---- replay and minimisation --------------------------------------------------------------------------------------


def replay(messages: list[tuple[str, bytes]], options: Options, seed: int = 0) -> list[tuple[str, str]]:
    """Send ``messages`` (to-tag markers resolved to the tags this daemon gives) to a fresh daemon, 50 ms apart,
    then the quiet period; the invariants broken on the way."""
    problems: list[tuple[str, str]] = []

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="ivr-fuzz-replay-") as tmp:
            target = Target(options, Path(tmp))
            await target.start()
            tags: dict[bytes, bytes] = {}  # Call-ID -> the to-tag of the daemon's first 2xx to an INVITE of it
            try:
                for kind, raw in messages:
                    data = _MARK_RE.sub(lambda m: tags.get(m.group(1), b""), raw)
                    srv = target.srv
                    expect = None
                    if kind == "sip":
                        msg = _parse(data) if _parses(data) else None
                        if isinstance(msg, Request) and msg.method == "INVITE":
                            with contextlib.suppress(SipError):
                                if server_key(msg) not in srv.endpoint._server:
                                    expect = (msg.call_id, msg.cseq.number, msg.top_via.branch)
                        dropped = srv.gate.dropped
                        target.send_sip(data)
                    else:
                        dropped = srv.gate.dropped
                        target.send_rtp(data, int(kind.partition(":")[2]))
                    await asyncio.sleep(0.05)
                    out, target.out[:] = list(target.out), []
                    for t in out:
                        resp = _parse(t.data)
                        if isinstance(resp, Response) and 200 <= resp.status < 300:
                            with contextlib.suppress(SipError):
                                tag = resp.to.tag
                                if tag and resp.cseq.method == "INVITE":
                                    tags.setdefault(resp.call_id.encode("latin-1"), tag.encode("latin-1"))
                    target.drain_rtp()
                    problems.extend(target.check_step(data, expect, out, dropped))
                await asyncio.sleep(options.max_call_seconds + 70.0)
                problems.extend(target.check_quiet())
            finally:
                await target.close()

    with deterministic_secrets(seed):
        _run_on_loop(main)
    return problems


def minimise(violation: Violation, options: Options, budget: int = 150) -> list[tuple[str, bytes]]:
    """The shortest sequence of messages found (within ``budget`` replays) that still breaks the same invariant."""
    kind = violation.kind
    replays = 0

    def fails(messages: list[tuple[str, bytes]]) -> bool:
        nonlocal replays
        replays += 1
        return any(k == kind for k, _ in replay(messages, options))

    messages = list(violation.messages)
    if not messages:
        return messages
    if violation.index >= 0:
        last = messages[-1]
        if fails([last]):
            messages = [last]
        else:
            call_ids = set(re.findall(rb"Call-ID: *([^\r\n]+)", last[1], re.IGNORECASE))
            related = [m for m in messages[:-1] if any(c in m[1] for c in call_ids)] + [last]
            if len(related) < len(messages) and fails(related):
                messages = related
    elif not fails(messages):
        return messages
    # drop whole messages, in chunks then one by one
    chunk = max(1, len(messages) // 2)
    while chunk >= 1 and replays < budget:
        i = 0
        while i < len(messages) and replays < budget:
            keep_last = violation.index >= 0
            end = min(len(messages) - (1 if keep_last else 0), i + chunk)
            if end <= i:
                break
            trial = messages[:i] + messages[end:]
            if trial and fails(trial):
                messages = trial
            else:
                i += chunk
        chunk //= 2
    # shrink the last message: its header lines, then its body lines
    if violation.index >= 0 and replays < budget:
        kind_last, data = messages[-1]
        lines = data.split(b"\r\n")
        i = 1
        while i < len(lines) and replays < budget:
            trial_lines = lines[:i] + lines[i + 1 :]
            trial = [*messages[:-1], (kind_last, b"\r\n".join(trial_lines))]
            if lines[i] and fails(trial):
                lines = trial_lines
            else:
                i += 1
        messages = [*messages[:-1], (kind_last, b"\r\n".join(lines))]
    return messages


def save_reproducer(violation: Violation, messages: list[tuple[str, bytes]], folder: Path, name: str) -> Path:
    """One file per violation: what broke, then each message (its kind, then its bytes as a Python literal)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    parts = [f"# {violation}", f"# {len(messages)} message(s); replay with tests.fuzz.fuzz_harness.replay", ""]
    for kind, data in messages:
        parts.append(f"--- {kind}")
        parts.append(repr(data))
    path.write_text("\n".join(parts) + "\n")
    return path
