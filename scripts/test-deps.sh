#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12: the real SIP peers we test against (SIPp, baresip,
# sipsak, Kamailio as the dispatcher in front), tshark for RTP stream analysis, espeak-ng, flite and sox for prompts and test speech,
# graphviz for flow diagrams, and ivr with its test and dev extras
# in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    sip-tester baresip sipsak tshark espeak-ng flite sox libsndfile1 procps python3-venv graphviz kamailio >/dev/null
IVR_EXTRAS=dev ./scripts/install.sh
