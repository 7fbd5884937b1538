#!/usr/bin/env bash
# The README's set-up command: installs picbench with every extra and the test tools, plus
# Debian's chromium for the report's browser test (skipped where apt-get is unavailable).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[all,dev]"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
