"""Digest authentication and registration against SIPp: a caller that authenticates its INVITE, and a registrar
that challenges the daemon's REGISTER (SIPp 3.6.1 computes MD5 digests only; SHA-256 is proven in unit tests)."""

from __future__ import annotations

import time

import pytest
from peers import IvrDaemon, Sipp

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("need_sipp")]

DIGEST = {"security": {"digest": {"realm": "ivr.test", "users": {"alice": "wonderland"}, "algorithms": ["MD5"]}}}


@pytest.mark.timeout(60)
def test_a_caller_answering_the_challenge_gets_through_and_a_wrong_password_does_not() -> None:
    with IvrDaemon(overrides=DIGEST) as ivr:
        auth_uri = f"ivr@127.0.0.1:{ivr.sip_port}"
        good = Sipp("uac_digest_invite.xml", ivr.sip_target, calls=3, rate=10, limit=3, timeout=30,
                    extra_args=["-au", "alice", "-ap", "wonderland", "-auth_uri", auth_uri]).run()  # fmt: skip
        bad = Sipp("uac_digest_invite.xml", ivr.sip_target, calls=1, rate=10, limit=1, timeout=30,
                   extra_args=["-au", "alice", "-ap", "mad-hatter", "-auth_uri", auth_uri]).run()  # fmt: skip
        plain = Sipp("uac", ivr.sip_target, calls=1, rate=10, limit=1, timeout=30).run()
        records = ivr.call_end_records()
        log = ivr.stderr_text()
    assert good.returncode == 0, good.describe()
    assert good.stats is not None and good.stats.successful == 3, good.describe()
    assert bad.returncode != 0 and bad.stats is not None and bad.stats.successful == 0, bad.describe()
    assert plain.returncode != 0, plain.describe()  # SIPp's built-in caller cannot answer a 401
    assert len(records) == 3, records  # only the authenticated calls were answered
    assert "invite refused by digest authentication" in log
    assert "wrong-password" in log or "wrong password" in log or "status=403" in log, log[-2000:]


@pytest.mark.timeout(60)
def test_the_daemon_registers_refreshes_and_unregisters_at_a_challenging_registrar() -> None:
    registrar = Sipp("uas_registrar.xml", None, calls=1, timeout=40, extra_args=["-set", "user", "ivr", "-set", "pass",
                     "s3cret"])  # fmt: skip
    with registrar:
        registrar.start()
        overrides = {"registration": {"registrar": f"sip:127.0.0.1:{registrar.local_port}", "aor": "sip:ivr@127.0.0.1",
                                  "username": "ivr", "password": "s3cret", "expires": 10}}  # fmt: skip
        with IvrDaemon(overrides=overrides) as ivr:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and ivr.stderr_text().count("registered") < 1:
                time.sleep(0.2)
            assert "registered" in ivr.stderr_text(), ivr.describe()
            time.sleep(6.5)  # the refresh comes at half the 10 s granted
            assert ivr.terminate() == 0, ivr.describe()
            log = ivr.stderr_text()
        result = registrar.wait(15)
    assert result.returncode == 0, result.describe() + "\n" + log[-3000:]
    assert "unregistered" in log
