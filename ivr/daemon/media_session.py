"""The media session of one call leg: offer/answer -> RTP port -> :class:`~ivr.media.stream.MediaStream`.

This is the one place that turns SDP into a running stream, for every leg there is: a caller's leg the daemon
answers (their offer, or our offer in the 200 when the INVITE had none), a leg the daemon places (a queue endpoint
it bridges to, a number it dials), a re-INVITE (hold, a new address), and the simulator's own caller and queue
endpoint. :class:`MediaSessions` holds what all of a process's sessions share: the media clock, where ports come
from and the :class:`MediaPolicy` (address, codecs, packet time, DTMF mode, where RTP may be sent).

A :class:`MediaSession` owns its port and socket from the moment it exists: :meth:`MediaSession.close` closes the
stream (or the bare socket, when no stream started) and gives the port back, whatever happened in between.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ivr.media.clock import MediaClock
from ivr.media.digits import DigitEvent, DtmfMode
from ivr.media.stream import MediaStream
from ivr.sip.sdp import PCMA, PCMU, Codec, NegotiatedMedia, SdpError, SessionDescription, answer_offer, build_offer
from ivr.sip.sdp import parse_answer as parse_sdp_answer

__all__ = ["CODECS", "PTIME_MS", "EphemeralPorts", "MediaPolicy", "MediaSession", "MediaSessions", "PortSource"]

CODECS: dict[str, Codec] = {"PCMU": PCMU, "PCMA": PCMA}
PTIME_MS = 20  # the media clock's packet time: what we send, and what our answers ask for


class PortSource(Protocol):
    """Where RTP sockets come from: the daemon's port pool, or any free port (the simulator)."""

    def acquire(self) -> tuple[int, socket.socket]: ...

    def release(self, port: int) -> None: ...


class EphemeralPorts:
    """A fresh UDP socket on any free port of ``host`` for each session (the simulator's side of a call)."""

    def __init__(self, host: str, socket_factory: Callable[[int, int], socket.socket] = socket.socket) -> None:
        self.host = host
        self._socket = socket_factory

    def acquire(self) -> tuple[int, socket.socket]:
        family = socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
        sock = self._socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, 0))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return int(sock.getsockname()[1]), sock

    def release(self, port: int) -> None:
        pass  # the socket is closed by its session


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """How a process negotiates and runs media.

    ``ptime`` goes into answers (``a=ptime``; None: not stated); ``single_codec`` answers with only the chosen codec
    (the media path sends and decodes one codec per call); ``dtmf_mode`` is how keys are heard on a stream
    (``none`` when they come by SIP INFO only, or nobody listens); ``username`` is the o= line's user.

    ``send_after_first_packet``: a stream sends nothing to the address the SDP names until valid RTP has come from
    the remote, then sends to that packet's source (an unauthenticated INVITE cannot aim our RTP at a third party).
    ``allow_relatch``: the first valid RTP from another source, before any from the signalled address, moves the
    remote there. Both on: symmetric RTP (wait for the caller's first packet from wherever it comes, answer there),
    the setting for callers behind NAT on a daemon open to the internet. See :class:`MediaStream`. A session copies
    both from the policy and may change them before its stream starts."""

    address: str
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    ptime: int | None = PTIME_MS
    single_codec: bool = True
    dtmf_mode: DtmfMode = "auto"
    allow_relatch: bool = False
    send_after_first_packet: bool = False
    username: str = "ivr"


def check_media_address(media: NegotiatedMedia, local_address: str) -> None:
    """We send RTP only to an IP address literal (a name in c= would make the daemon resolve what a caller wrote),
    and only of the family we serve from (an IPv6 c= on an IPv4 RTP address cannot be sent to)."""
    try:
        remote = ipaddress.ip_address(media.remote_address)
    except ValueError:
        reason = f"c= address {media.remote_address!r} is not an IP address; we do not resolve names"
        raise SdpError(488, reason) from None
    ours = ipaddress.ip_address(local_address)
    if remote.version != ours.version:
        raise SdpError(488, f"c= IN IP{remote.version}: this daemon sends RTP over IPv{ours.version} only")


class MediaSession:
    """One leg's RTP: its port and socket, its SDP session (o= id and version) and, once negotiated, its stream."""

    __slots__ = (
        "_owner", "allow_relatch", "closed", "dtmf_mode", "media", "offered", "on_audio", "on_digit_event", "port",
        "send_after_first_packet", "session_id", "sock", "stream", "version",
    )  # fmt: skip

    def __init__(self, owner: MediaSessions, port: int, sock: socket.socket) -> None:
        self._owner = owner
        self.port = port
        self.sock = sock
        self.session_id = secrets.randbelow(2**31)
        self.version = 0
        """How many times our SDP changed since the first (RFC 3264 8: the o= version goes up by one each time)."""
        self.stream: MediaStream | None = None
        self.media: NegotiatedMedia | None = None
        self.offered: tuple[Codec, ...] = ()
        self.closed = False
        self.on_audio: Callable[[int, int, bytes], None] | None = None
        self.on_digit_event: Callable[[DigitEvent], None] | None = None
        self.dtmf_mode: DtmfMode = owner.policy.dtmf_mode
        self.allow_relatch = owner.policy.allow_relatch
        self.send_after_first_packet = owner.policy.send_after_first_packet

    @property
    def policy(self) -> MediaPolicy:
        return self._owner.policy

    # ---- negotiation ----

    def offer(self, codecs: tuple[Codec, ...] | None = None, *, telephone_event: bool = True) -> bytes:
        """Our offer (an outgoing INVITE, or the 200 to an INVITE without one): the answer comes to
        :meth:`accept_answer`."""
        policy = self.policy
        self.offered = codecs or policy.codecs
        sdp = build_offer(
            local_address=policy.address,
            local_port=self.port,
            codecs=self.offered,
            session_id=self.session_id,
            session_version=self.session_id,
            username=policy.username,
            telephone_event_pt=101 if telephone_event else None,
        )
        return sdp.serialize()

    def answer(self, offer: bytes) -> bytes:
        """Answer the remote's offer and start the stream; raises :class:`SdpError` (the session stays unstarted)."""
        answer, media = self._answer_offer(offer, self.policy.codecs, self.session_id)
        self._start(media)
        return answer

    def accept_answer(self, body: bytes) -> MediaStream:
        """The remote's answer to :meth:`offer` (a 183's early media, a 2xx, or a late offer's ACK): start the
        stream, or move it to the new address. Raises :class:`SdpError`."""
        if not body:
            raise SdpError(488, "no SDP in the answer")
        media = parse_sdp_answer(SessionDescription.parse(body), self.offered or self.policy.codecs)
        check_media_address(media, self.policy.address)
        if self.stream is None:
            return self._start(media)
        self.media = media
        with contextlib.suppress(ValueError):
            self.stream.set_remote((media.remote_address, media.remote_port))
        self.stream.set_hold(media.on_hold)
        return self.stream

    def update(self, offer: bytes) -> tuple[bytes, NegotiatedMedia]:
        """A new offer in the call (re-INVITE): the same codec and payload type only (changing them mid-call is
        refused 488); hold and a new address are applied to the running stream. Returns our answer."""
        stream, current = self.stream, self.media
        if stream is None or current is None:
            raise SdpError(488, "no media session to update")
        if not offer:
            raise SdpError(488, "a re-INVITE without SDP is not supported")
        supported = (CODECS.get(current.codec.name, current.codec),)
        answer, media = self._answer_offer(offer, supported, self.session_id + self.version + 1)
        if media.codec.payload_type != stream.payload_type:
            raise SdpError(488, "changing the payload type of the call's codec mid-call is not supported")
        self.version += 1
        if not media.on_hold:
            stream.set_remote((media.remote_address, media.remote_port))
        stream.set_hold(media.on_hold)
        stream.telephone_event_pt = media.telephone_event_pt
        self.media = media
        return answer, media

    def _answer_offer(
        self, offer: bytes, supported: tuple[Codec, ...], session_version: int
    ) -> tuple[bytes, NegotiatedMedia]:
        """Our SDP answer to ``offer`` (RFC 3264) with what the policy says, and the media it settles; the remote
        address must be one we send RTP to. Raises :class:`SdpError`."""
        policy = self.policy
        answer, media = answer_offer(
            SessionDescription.parse(offer),
            local_address=policy.address,
            local_port=self.port,
            supported=supported,
            session_id=self.session_id,
            session_version=session_version,
            single_codec=policy.single_codec,
            ptime=policy.ptime,
            username=policy.username,
        )
        check_media_address(media, policy.address)
        return answer.serialize(), media

    def _start(self, media: NegotiatedMedia) -> MediaStream:
        owner = self._owner
        stream = MediaStream(
            owner.clock.loop,
            self.sock,
            clock=owner.clock,
            codec=media.codec.name,
            payload_type=media.codec.payload_type,
            remote=(media.remote_address, media.remote_port),
            telephone_event_pt=media.telephone_event_pt,
            allow_relatch=self.allow_relatch,
            send_after_first_packet=self.send_after_first_packet,
            dtmf_mode=self.dtmf_mode,
            on_audio=self.on_audio,
            on_digit_event=self.on_digit_event,
        )
        if media.on_hold:
            stream.set_hold(True)
        self.stream = stream
        self.media = media
        return stream

    # ---- end ----

    def close(self) -> None:
        """Close the stream (or the bare socket) and give the port back. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            self.stream.close()
        else:
            self.sock.close()
        self._owner.ports.release(self.port)


class MediaSessions:
    """Makes :class:`MediaSession` objects on one media clock, with ports from ``ports``, as ``policy`` says."""

    def __init__(self, clock: MediaClock, ports: PortSource, policy: MediaPolicy) -> None:
        self.clock = clock
        self.ports = ports
        self.policy = policy

    def open(self) -> MediaSession:
        """A new session with its own port; raises ``PortPoolExhausted`` (or ``OSError``) when there is none."""
        port, sock = self.ports.acquire()
        return MediaSession(self, port, sock)
