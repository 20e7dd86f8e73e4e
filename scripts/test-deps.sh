#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12: the real SIP peers we test against (SIPp, baresip,
# sipsak), tshark for RTP stream analysis, espeak-ng and sox for prompts, graphviz for flow diagrams, and ivr with its test and dev extras
# in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    sip-tester baresip sipsak tshark espeak-ng sox libsndfile1 procps python3-venv graphviz >/dev/null
IVR_EXTRAS=dev ./scripts/install.sh
