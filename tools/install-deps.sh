#!/bin/bash
# tools/install-deps.sh -- installs libdeepdefense's build and test
# dependencies from Debian 12's packages (uses sudo when not root).
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    build-essential cmake pkg-config libdnnl-dev check libjansson-dev zlib1g-dev \
    dataset-fashion-mnist python3
