"""Digest authentication in the daemon: of INVITE (SHA-256 offered first, answered by our own UAC side), and of the
daemon's own REGISTER at an upstream registrar (which the SIP endpoint keeps registered, and unregisters on close)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from test_server import RawCaller, start_server

from ivr.sip.auth import DigestClient, DigestVerifier, parse_auth_fields, static_credentials
from ivr.sip.message import Request, make_response, parse_message


async def test_a_sha256_answer_to_the_challenge_is_let_in_and_the_challenge_offers_sha256_first(tmp_path: Path) -> None:
    server = await start_server({
        "routes": [], "admin.listen": None, "cdr.url": f"sqlite:///{tmp_path}/c.db",
        "security": {"digest": {"realm": "ivr.test", "users": {"alice": "wonderland"}, "trusted_skip": False}},
    })  # fmt: skip
    caller = RawCaller(server)
    try:
        invite = caller.request("INVITE", 1, "inv1", caller.sdp())
        await caller.send(invite)
        challenge = await caller.recv_final()
        assert challenge.status == 401
        offered = [
            f.get("algorithm") for v in challenge.headers.get_all("WWW-Authenticate") for f in parse_auth_fields(v)
        ]
        assert offered == ["SHA-256", "MD5"]
        await caller.send(caller.request("ACK", 1, "inv1"))
        assert not server.calls
        retry = invite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(
            b"branch=z9hG4bKinv1", b"branch=z9hG4bKinv2"
        )
        request = parse_message(retry)
        assert isinstance(request, Request)
        (authorization,) = DigestClient("alice", "wonderland").authorize(request, challenge)
        assert authorization.challenge.algorithm == "SHA-256"
        request.headers.add(authorization.name, authorization.value)
        await caller.send(bytes(request))
        answer = await caller.recv_final()
        assert answer.status == 200
        assert len(server.calls) == 1
    finally:
        caller.close()
        await server.close()


async def test_a_wrong_password_is_refused_with_403_and_a_trusted_source_is_not_challenged(tmp_path: Path) -> None:
    digest = {"realm": "ivr.test", "users": {"alice": "wonderland"}}
    server = await start_server({
        "routes": [], "admin.listen": None, "cdr.url": f"sqlite:///{tmp_path}/c.db",
        "security": {"digest": digest, "trusted_sources": ["127.0.0.1"]},
    })  # fmt: skip
    caller = RawCaller(server)
    try:
        assert (await caller.call()).status == 200  # the softswitch in trusted_sources is not challenged
    finally:
        caller.close()
        await server.close()
    server = await start_server({
        "routes": [], "admin.listen": None, "cdr.url": f"sqlite:///{tmp_path}/d.db",
        "security": {"digest": {**digest, "algorithms": ["MD5"]}},
    })  # fmt: skip
    caller = RawCaller(server, call_id="it-2")
    try:
        invite = caller.request("INVITE", 1, "inv1", caller.sdp())
        await caller.send(invite)
        challenge = await caller.recv_final()
        await caller.send(caller.request("ACK", 1, "inv1"))
        request = parse_message(
            invite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(b"z9hG4bKinv1", b"z9hG4bKinv2")
        )
        assert isinstance(request, Request)
        (authorization,) = DigestClient("alice", "cheshire").authorize(request, challenge)
        request.headers.add(authorization.name, authorization.value)
        await caller.send(bytes(request))
        refused = await caller.recv_final()
        assert refused.status == 403
        assert "authentication failed" in (refused.headers.get("Warning") or "")
        assert server.endpoint.auth_refused == 2
        assert server.metrics.registry.get_sample_value("ivr_sip_refused_total", {"reason": "auth"}) == 2
    finally:
        caller.close()
        await server.close()


def _second_invite(invite: bytes) -> bytes:
    """The INVITE again, as a new transaction (CSeq + 1, new branch), to carry the credentials."""
    return invite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(b"z9hG4bKinv1", b"z9hG4bKinv2")


class Registrar:
    """A registrar on a UDP socket of its own, in front of our DigestVerifier (user ivr, password s3cret)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        credentials = static_credentials({"ivr": "s3cret"})
        self.verifier = DigestVerifier(realm="pbx.test", secret=b"r" * 32, credentials=credentials)

    def close(self) -> None:
        self.sock.close()

    async def recv(self, timeout: float = 5.0) -> tuple[Request, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        while True:
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), timeout)
            request = parse_message(data)
            assert isinstance(request, Request) and request.method == "REGISTER"
            return request, addr

    async def handle(self, timeout: float = 5.0) -> tuple[Request, int]:
        """Take the next REGISTER and answer it: a challenge, 403, or 200 echoing the binding."""
        request, addr = await self.recv(timeout)
        result = self.verifier.verify(request, time.time())
        if result.ok:
            status = 200
            extra = [("Contact", request.headers.get("Contact") or "")]
        else:
            status = result.status or 403
            extra = list(self.verifier.response_headers(result, time.time()))
        response = make_response(request, status, to_tag="reg", extra=extra)
        await asyncio.get_running_loop().sock_sendto(self.sock, response.to_bytes(), addr)
        return request, status


def _registration(registrar: Registrar, tmp_path: Path) -> dict[str, object]:
    return {
        "routes": [], "admin.listen": None, "cdr.url": f"sqlite:///{tmp_path}/r.db",
        "registration": {"registrar": f"sip:127.0.0.1:{registrar.port}", "aor": "sip:ivr@127.0.0.1",
                         "username": "ivr", "password": "s3cret", "expires": 60},
    }  # fmt: skip


async def test_the_daemon_registers_through_its_endpoint_and_unregisters_on_close(tmp_path: Path) -> None:
    registrar = Registrar()
    try:
        server = await start_server(_registration(registrar, tmp_path))
        closed = False
        try:
            first, status = await registrar.handle()
            assert status == 401 and first.headers.get("Authorization") is None
            assert first.top_via.port == server.config.sip.port  # sent from the daemon's SIP socket
            second, status = await registrar.handle()
            assert status == 200 and second.call_id == first.call_id and second.cseq.number == 2
            upstream = server.registration
            assert upstream is not None
            for _ in range(100):
                if upstream.registered:
                    break
                await asyncio.sleep(0.02)
            assert upstream.registered and upstream.last_failure is None
            registration = upstream.registration
            assert registration is not None and server.endpoint.registrations == {registration}
            assert registration.expires == 60
            close = asyncio.ensure_future(server.close())
            closed = True
            removal, status = await registrar.handle()  # credentials sent pre-emptively: accepted at once
            assert status == 200 and removal.headers.get("Expires") == "0" and removal.cseq.number == 3
            assert (removal.headers.get("Contact") or "").endswith(";expires=0")
            await asyncio.wait_for(close, 5)
            assert not upstream.registered and not server.endpoint.registrations
        finally:
            if not closed:
                await server.close()
    finally:
        registrar.close()


async def test_unregistering_on_close_waits_a_bounded_time_for_a_silent_registrar(tmp_path: Path) -> None:
    registrar = Registrar()
    try:
        server = await start_server({**_registration(registrar, tmp_path), "sip.t1": 0.05})
        await registrar.handle()
        await registrar.handle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.close()  # nobody answers the expires=0 REGISTER: close waits 32*T1 (1.6 s), no longer
        assert 1.0 < loop.time() - started < 4.0
        removal, _addr = await registrar.recv(0.5)
        assert removal.headers.get("Expires") == "0"
    finally:
        registrar.close()
