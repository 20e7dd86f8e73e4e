"""``SimCaller``: a caller (UAC) for tests and ops, built on the daemon's own SIP and media code.

It runs a :class:`~ivr.sip.endpoint.SipEndpoint` on the daemon's own driver (:class:`~ivr.daemon.sip_driver.SipDriver`),
places one call at a time with our SDP offer, and once the call is answered runs its media session
(:mod:`ivr.daemon.media_session`, as every daemon leg does) to the answer's address: it records every audio
payload it receives (``heard_frames``, for :mod:`ivr.simulator.fingerprint`) and sends key presses by RFC 4733 or
SIP INFO::

    async with SimCaller() as caller:
        await caller.dial("sip:2000@127.0.0.1:5060")
        await caller.press("1")
        await caller.wait_hangup(10)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import numpy as np

from ivr.daemon.media_session import EphemeralPorts, MediaPolicy, MediaSession, MediaSessions, PortSource
from ivr.daemon.sip_driver import SipDriver
from ivr.media.clock import MediaClock
from ivr.media.digits import normalize_key
from ivr.media.dtmf_inband import dtmf_tone
from ivr.media.ports import RtpPortPool
from ivr.media.prompts import Prompt
from ivr.media.stream import MediaStream
from ivr.sip.endpoint import (
    CallAnswered,
    CallEnded,
    CallProgress,
    EndpointConfig,
    EndReason,
    IncomingCall,
    Leg,
    LegState,
    Output,
    Peer,
    ReferReceived,
    ReInvite,
    SipEndpoint,
)
from ivr.sip.errors import SipError
from ivr.sip.refer import parse_refer_to
from ivr.sip.sdp import PCMA, PCMU, Codec, NegotiatedMedia, SdpError
from ivr.sip.transaction import TimerValues
from ivr.sip.uri import SipURI

__all__ = ["CallFailed", "ObservedTransfer", "SimCaller", "SimCallerError", "attached_data"]

CODECS: dict[str, Codec] = {"PCMU": PCMU, "PCMA": PCMA}
PressMethod = Literal["rfc4733", "info", "inband"]


@dataclass(frozen=True, slots=True)
class ObservedTransfer:
    """A handoff as the simulated side saw it: the daemon handed this call on, by REFER to this caller (``method``
    "refer": the target and the headers embedded in the Refer-To) or by calling a queue endpoint itself (``method``
    "bridge": the INVITE's headers). ``data`` is what the headers carry: User-to-User decoded, and ``X-IVR-<Key>``
    headers as ``key``. Not ``ivr.sip.leg.Transfer``, the SIP core's REFER in progress on the transferor's side."""

    target: str
    headers: tuple[tuple[str, str], ...]
    data: Mapping[str, str]
    method: str = "refer"
    queue: str = ""
    """The queue's name, when the target is a configured queue endpoint (filled by whoever knows the config)."""


def attached_data(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """What a queue endpoint reads from a handoff's headers: the User-to-User key=value pairs (hex, RFC 7433),
    then ``X-IVR-<Key>`` headers as ``key`` (lower case, dashes to underscores)."""
    from ivr.handoff.data import decode_uui

    data: dict[str, str] = {}
    for name, value in headers:
        if name.lower() == "user-to-user":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                data.update(decode_uui(value))
    for name, value in headers:
        if name.lower().startswith("x-ivr-"):
            data[name[6:].lower().replace("-", "_")] = value
    return data


class SimCallerError(Exception):
    """The simulated caller cannot do what it was asked (no call, call already up, unusable answer...)."""


class CallFailed(SimCallerError):
    """The call was not answered: a final non-2xx response (``status``), or none at all (``status`` 408)."""

    def __init__(self, target: str, status: int | None, reason: EndReason) -> None:
        self.target = target
        self.status = status
        self.reason = reason
        super().__init__(f"call to {target} failed: {status if status is not None else 'no status'} ({reason.value})")


class SimCaller:
    """One simulated phone on ``host`` (an IP literal). Use as ``async with SimCaller() as caller``.

    The SIP socket binds port 0 (any free port). RTP comes from ``RtpPortPool(host, *rtp_ports)`` when
    ``rtp_ports`` is given, otherwise from a socket on any free port. ``timers`` are the SIP T1/T2/T4 values.
    ``socket_factory`` makes the RTP sockets (a :class:`~ivr.simulator.virtual.VirtualNetwork`'s on virtual time).
    ``clock`` is the media clock its stream sends on: a lab gives the daemon's, so both sides tick together; without
    one the caller starts a clock of its own."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        rtp_ports: tuple[int, int] | None = None,
        timers: TimerValues | None = None,
        user_agent: str = "ivr-simulator",
        socket_factory: Callable[[int, int], socket.socket] = socket.socket,
        transfer_result: int = 200,
        clock: MediaClock | None = None,
    ) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address literal, got {host!r}") from None
        self.host = host
        self._timer_values = timers or TimerValues()
        self._user_agent = user_agent
        self._socket = socket_factory
        self.transfer_result = transfer_result
        """How a transfer asked by REFER turns out, reported in the final NOTIFY: 200 (the target answered; the
        daemon then hangs up), or a failure status such as 486 (the daemon takes the flow's failure path)."""
        self._ports: PortSource = (
            RtpPortPool(host, *rtp_ports, socket_factory=socket_factory)
            if rtp_ports is not None
            else EphemeralPorts(host, socket_factory)
        )
        self._clock = clock
        self._own_clock: MediaClock | None = None
        self._sessions: MediaSessions | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver = SipDriver(None, self._on_event)
        self._endpoint: SipEndpoint | None = None
        self._leg: Leg | None = None
        self._answered: asyncio.Future[CallAnswered] | None = None
        self._ended: asyncio.Future[CallEnded] | None = None
        self._media: MediaSession | None = None
        self._stream: MediaStream | None = None
        self.media: NegotiatedMedia | None = None
        self.progress: list[int] = []
        """Provisional statuses received for the current call (180, 183...)."""
        self.heard_frames: list[bytes] = []
        """The audio payloads received in the current call, in arrival order."""
        self.end: CallEnded | None = None
        """How the current (or last) call ended."""
        self.last_audio_at = 0.0
        """When (on the loop's clock) the last audio payload arrived."""
        self.transfers: list[ObservedTransfer] = []
        """Transfers the daemon asked for in the current call, in order."""
        self.answers: int | None = None
        """How this phone answers a call placed to it: None refuses every call (486, a caller takes no calls),
        200 answers (one call at a time: busy 486 while one is up), any other status refuses with it."""
        self._incoming: asyncio.Future[Leg] | None = None

    # ---- lifecycle ----

    async def __aenter__(self) -> SimCaller:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the SIP socket."""
        if self._endpoint is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        if self._clock is None:  # a caller on its own (not in a lab): a media clock of its own
            self._clock = self._own_clock = MediaClock(loop)
            self._own_clock.start()
        policy = MediaPolicy(address=self.host, ptime=None, dtmf_mode="none", username="simcaller")
        self._sessions = MediaSessions(self._clock, self._ports, policy)
        port = await self._driver.bind_udp(self.host, 0)
        self._endpoint = SipEndpoint(
            EndpointConfig(
                host=self.host, port=port, user_agent=self._user_agent, timers=self._timer_values, transferee=True
            )
        )
        self._driver.endpoint = self._endpoint

    async def close(self, timeout: float = 2.0) -> None:
        """Hang up a call in progress (waiting up to ``timeout`` for the BYE's answer) and release the sockets."""
        if self._leg is not None and self.end is None:
            with contextlib.suppress(TimeoutError, SimCallerError):
                await self.hangup(timeout)
        self._close_media()
        await self._driver.close()
        self._driver.endpoint = None
        self._endpoint = None
        if self._own_clock is not None:
            self._own_clock.stop()
            self._clock = self._own_clock = None

    @property
    def sip_address(self) -> tuple[str, int]:
        endpoint = self._require_endpoint()
        return endpoint.config.host, endpoint.config.port

    @property
    def stream(self) -> MediaStream | None:
        """The call's media stream while the call is up."""
        return self._stream

    @property
    def leg(self) -> Leg | None:
        return self._leg

    # ---- verbs ----

    async def dial(
        self,
        target: str,
        caller_number: str = "0888123456",
        codecs: Sequence[str] = ("PCMU",),
        *,
        telephone_event: bool = True,
        timeout: float = 10.0,
    ) -> CallAnswered:
        """Call ``target`` (``sip:user@ip:port``) and wait until it is answered; media starts at once.

        ``telephone_event=False`` offers no RFC 4733 payload type (the daemon then listens for in-band tones).
        Raises :class:`CallFailed` (with the status) when the call is refused or not answered within ``timeout``
        (then it is cancelled first)."""
        endpoint = self._require_endpoint()
        loop = self._require_loop()
        if self._leg is not None and self.end is None:
            raise SimCallerError("a call is already in progress; hang it up first")
        self._close_media()
        uri = SipURI.parse(target)
        peer_host, peer_port = uri.host_port()
        if not _is_ip(peer_host):
            infos = await loop.getaddrinfo(peer_host, peer_port, type=socket.SOCK_DGRAM)
            peer_host = str(infos[0][4][0])
        offered = [_codec(name) for name in codecs]
        if not offered:
            raise ValueError("codecs must name at least one codec")
        assert self._sessions is not None
        session = self._media = self._sessions.open()
        session.on_audio = self._on_audio
        offer = session.offer(tuple(offered), telephone_event=telephone_event)
        self.heard_frames = []
        self.transfers = []
        self.progress = []
        self.end = None
        self.media = None
        self._answered = loop.create_future()
        self._ended = loop.create_future()
        sip_host, sip_port = self.sip_address
        self._leg = endpoint.call(
            request_uri=target,
            from_uri=f"sip:{caller_number}@{sip_host}:{sip_port}",
            to_uri=target,
            peer=Peer(peer_host, peer_port, "udp"),
            sdp=offer,
        )
        self._flush()
        try:
            answered = await asyncio.wait_for(asyncio.shield(self._answered), timeout)
        except TimeoutError:
            self._answered.cancel()  # the CANCEL's outcome is not waited for; nobody reads this future now
            endpoint.hangup(self._leg)
            self._flush()
            self._close_media()
            raise CallFailed(target, 408, EndReason.TIMEOUT) from None
        except CallFailed:
            self._close_media()
            raise
        try:
            stream = session.accept_answer(answered.response.body)
        except SdpError as exc:
            endpoint.hangup(self._leg)
            self._flush()
            self._close_media()
            raise SimCallerError(f"call to {target} answered with an unusable SDP answer: {exc.reason}") from exc
        self.media = session.media
        self._stream = stream
        return answered

    async def press(
        self, keys: str, *, method: PressMethod = "rfc4733", gap: float = 0.15, duration_ms: int = 100
    ) -> None:
        """Press ``keys`` one after another, each held ``duration_ms``, ``gap`` seconds apart: by RFC 4733 events
        in the media (the default; needs a negotiated telephone-event), by SIP INFO application/dtmf-relay, or as
        in-band tones in the audio (each tone followed by ``gap`` seconds of encoded silence)."""
        if method not in ("rfc4733", "info", "inband"):
            raise ValueError(f"method must be 'rfc4733', 'info' or 'inband', got {method!r}")
        endpoint = self._require_endpoint()
        leg, stream = self._require_call()
        for count, key in enumerate(keys):
            if count:
                await asyncio.sleep(gap)
            if method == "info":
                endpoint.send_info_digit(leg, key, duration_ms)
                self._flush()
                await asyncio.sleep(duration_ms / 1000)
                continue
            if method == "inband":
                await self._play_tone(stream, key, duration_ms, gap)
                continue
            stream.send_digit(key, duration_ms)
            # The stream gives no event when a press is sent; the last report goes out after the press and
            # three end reports, so waiting that long (plus slack for a late tick) normally suffices.
            deadline = asyncio.get_running_loop().time() + duration_ms / 1000 + 1.0
            await asyncio.sleep(duration_ms / 1000 + 4 * stream.clock.ptime)
            while stream.sending_digits and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(stream.clock.ptime)

    async def _play_tone(self, stream: MediaStream, key: str, duration_ms: int, gap: float) -> None:
        tone = dtmf_tone(normalize_key(key), duration_ms / 1000)
        silence = np.zeros(max(round(gap * 8000), 480), dtype=np.int16)  # at least 60 ms: the detector hears the end
        pcm = np.concatenate([np.clip(np.rint(tone), -32768, 32767).astype(np.int16), silence])
        frames = Prompt(f"dtmf-{key}", pcm).frames(stream.codec)
        done: asyncio.Future[None] = self._require_loop().create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        stream.play(frames, on_done=finished)
        timeout = len(frames) * stream.clock.ptime + 1.0
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            stream.stop_playback()
            raise SimCallerError(f"the tone for key {key!r} did not finish playing in {timeout:.1f} s") from None

    async def hangup(self, timeout: float = 2.0) -> CallEnded:
        """Send BYE (or CANCEL while unanswered) and wait up to ``timeout`` for the BYE's answer."""
        endpoint = self._require_endpoint()
        if self._leg is None:
            raise SimCallerError("no call to hang up")
        endpoint.hangup(self._leg)
        self._flush()
        ended = await self._wait_ended(timeout)
        loop = self._require_loop()
        deadline = loop.time() + timeout
        leg = self._leg
        # The BYE's final response (or its timeout) moves the leg to ENDED; the sans-I/O endpoint has no event for it.
        while leg.state is not LegState.ENDED and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self._close_media()
        return ended

    async def wait_hangup(self, timeout: float) -> CallEnded:
        """Wait up to ``timeout`` seconds for the call to end (the far end's BYE: reason ``REMOTE_BYE``);
        raises ``TimeoutError`` if it does not."""
        ended = await self._wait_ended(timeout)
        self._close_media()
        return ended

    # ---- the endpoint's driver ----

    def _flush(self) -> None:
        self._driver.flush()

    def _on_event(self, out: Output) -> None:
        endpoint = self._require_endpoint()
        if isinstance(out, CallProgress):
            if out.leg is self._leg:
                self.progress.append(out.response.status)
        elif isinstance(out, CallAnswered):
            if out.leg is self._leg and self._answered is not None and not self._answered.done():
                self._answered.set_result(out)
        elif isinstance(out, CallEnded):
            self._on_ended(out)
        elif isinstance(out, IncomingCall):
            self._on_incoming(out.leg)
        elif isinstance(out, ReInvite):
            endpoint.respond(out.leg, 488, request=out.request)
        elif isinstance(out, ReferReceived):
            self._on_refer(out)
        # CallConfirmed, DigitInfo...: media starts on our answer; keys sent to a phone are not listened for

    async def wait_call(self, timeout: float) -> Leg:
        """Wait until a call placed to this phone has been answered (set :attr:`answers` to 200 first); then
        :meth:`press`, :meth:`hangup` and :meth:`wait_hangup` work on it as on a call this phone dialled."""
        loop = self._require_loop()
        if self._incoming is None:
            self._incoming = loop.create_future()
        leg = await asyncio.wait_for(asyncio.shield(self._incoming), timeout)
        self._incoming = None
        return leg

    def _on_incoming(self, leg: Leg) -> None:
        endpoint = self._require_endpoint()
        loop = self._require_loop()
        if self.answers is None:
            endpoint.reject(leg, 486, "a simulated caller takes no calls")
            return
        if self.answers >= 300 or (self._leg is not None and self.end is None):
            endpoint.reject(leg, self.answers if self.answers >= 300 else 486)
            return
        assert self._sessions is not None
        self._close_media()
        session = self._sessions.open()
        session.on_audio = self._on_audio
        try:
            answer = session.answer(leg.invite.body)
        except SdpError as exc:
            session.close()
            endpoint.reject(leg, exc.status, f"SDP: {exc.reason}")
            return
        self.heard_frames = []
        self.transfers = []
        self.progress = []
        self.end = None
        self._media, self._stream, self.media = session, session.stream, session.media
        self._leg = leg
        self._answered = None
        self._ended = loop.create_future()
        endpoint.answer(leg, answer)
        if self._incoming is None or self._incoming.done():
            self._incoming = loop.create_future()
        self._incoming.set_result(leg)

    def _on_refer(self, event: ReferReceived) -> None:
        """Act as a phone asked to transfer (RFC 3515): 202, NOTIFY 100, then the outcome as a final NOTIFY. The
        simulated phone does not place the new call; the transfer and its data are kept in ``transfers``."""
        endpoint = self._require_endpoint()
        if event.leg is not self._leg:
            endpoint.reject_refer(event.leg, event.request, 481)
            return
        try:
            target = parse_refer_to(event.refer_to)
        except SipError as exc:
            endpoint.reject_refer(event.leg, event.request, 400, exc.reason)
            return
        self.transfers.append(ObservedTransfer(target.uri, target.headers, attached_data(target.headers), "refer"))
        endpoint.accept_refer(event.leg, event.request)
        endpoint.notify_refer(event.leg, event.request, self.transfer_result)

    def _on_ended(self, event: CallEnded) -> None:
        if event.leg is not self._leg:
            return
        self.end = event
        if self._answered is not None and not self._answered.done():
            target = self._leg.invite.uri if self._leg is not None else "?"
            self._answered.set_exception(CallFailed(target, event.status, event.reason))
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(event)
        if self._stream is not None:
            self._stream.stop_playback()

    def _on_audio(self, sequence: int, timestamp: int, payload: bytes) -> None:
        self.heard_frames.append(payload)
        if self._loop is not None:
            self.last_audio_at = self._loop.time()

    # ---- helpers ----

    async def _wait_ended(self, timeout: float) -> CallEnded:
        if self._ended is None:
            raise SimCallerError("no call was placed")
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    def _close_media(self) -> None:
        if self._media is not None:
            self._media.close()
            self._media = None
        self._stream = None

    def _require_endpoint(self) -> SipEndpoint:
        if self._endpoint is None:
            raise SimCallerError("SimCaller is not started: use 'async with SimCaller() as caller'")
        return self._endpoint

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise SimCallerError("SimCaller is not started: use 'async with SimCaller() as caller'")
        return self._loop

    def _require_call(self) -> tuple[Leg, MediaStream]:
        if self._leg is None or self._stream is None or self.end is not None:
            raise SimCallerError("no call in progress")
        return self._leg, self._stream


def _codec(name: str) -> Codec:
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}; one of {sorted(CODECS)}") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
