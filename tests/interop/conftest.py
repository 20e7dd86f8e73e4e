"""Fixtures for interop tests: skip (with the install command) when a peer program is missing.

A test asks for the peers it needs with ``@pytest.mark.usefixtures("need_sipp", ...)``. Only a missing
program (or a missing permission to capture / send raw packets) skips; anything that goes wrong once the
peer runs, including the ivr daemon not starting, fails the test.

Set IVR_INTEROP_KEEP=1 to keep every peer's work directory (configs, logs, pcaps) after the run.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import WELCOME_PROMPT, AudioStats, have, sound_file_stats, tshark_can_capture


def _need(binary: str, package: str) -> None:
    if not have(binary):
        pytest.skip(f"{binary} not installed (apt-get install -y {package})")


@pytest.fixture
def need_sipp() -> None:
    _need("sipp", "sip-tester")


@pytest.fixture
def need_baresip() -> None:
    _need("baresip", "baresip")
    if not Path("/usr/lib/baresip/modules/sndfile.so").exists():
        pytest.skip("baresip sndfile module missing (/usr/lib/baresip/modules/sndfile.so)")


@pytest.fixture
def need_sipsak() -> None:
    _need("sipsak", "sipsak")


@pytest.fixture(scope="session")
def _tshark_ok() -> bool:
    return tshark_can_capture("lo")


@pytest.fixture
def need_tshark(_tshark_ok: bool) -> None:
    _need("tshark", "tshark")
    if not _tshark_ok:
        pytest.skip("tshark cannot capture on lo here (needs root, or dumpcap with cap_net_raw,cap_net_admin)")


@pytest.fixture
def need_pcap_play() -> None:
    """SIPp's play_pcap_audio sends through a raw socket: root or CAP_NET_RAW."""
    _need("sipp", "sip-tester")
    if not (Path("/usr/share/sip-tester") / "g711a.pcap").exists():
        pytest.skip("SIPp's pcaps missing from /usr/share/sip-tester (apt-get install -y sip-tester)")
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        pytest.skip(f"no raw sockets for SIPp's pcap replay (uid {os.geteuid()}, needs root or CAP_NET_RAW)")


@pytest.fixture(scope="session")
def prompt() -> AudioStats:
    """Length and loudness of the welcome prompt the daemon plays (configs/prompts/en/welcome.wav)."""
    return sound_file_stats(WELCOME_PROMPT)
