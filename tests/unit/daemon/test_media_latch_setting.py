"""``media.send_after_first_packet`` from the configuration to the media policy every call's stream is built on."""

from __future__ import annotations

from pathlib import Path

from ivr.config import load_config
from ivr.daemon.server import IvrServer

REPO = Path(__file__).resolve().parents[3]


def test_off_by_default() -> None:
    assert load_config(None).media.send_after_first_packet is False
    assert load_config(REPO / "configs" / "ivr.yaml").media.send_after_first_packet is False


def test_the_setting_reaches_the_media_policy() -> None:
    config = load_config(
        REPO / "configs" / "ivr.yaml", {"media.send_after_first_packet": True, "media.allow_relatch": True}
    )
    policy = IvrServer(config).media_policy
    assert policy.send_after_first_packet is True and policy.allow_relatch is True
    assert IvrServer(load_config(REPO / "configs" / "ivr.yaml")).media_policy.send_after_first_packet is False
