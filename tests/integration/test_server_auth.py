"""Digest authentication of INVITE in the daemon: SHA-256 offered first, answered by our own UAC side."""

from __future__ import annotations

from pathlib import Path

from test_server import RawCaller, start_server

from ivr.sip.auth import DigestClient, parse_auth_fields
from ivr.sip.message import Request, parse_message


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
