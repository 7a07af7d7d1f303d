#!/usr/bin/env bash
# Installs Debian's Chromium for the report's end-to-end test (tests/it/report.rs renders the
# page headless and reads its DOM). Idempotent: does nothing when `chromium` is already on PATH.
# Needs root for apt-get (CI and these machines run as root); elsewhere install `chromium`
# yourself, or run the tests without AZIMUTH_REQUIRE_CHROMIUM to check the HTML only.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then echo "browser: $(chromium --version 2>/dev/null | head -n1)"; exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: no chromium, and apt-get as root is not available here; install Debian's" \
       "'chromium' package (or set AZIMUTH_REQUIRE_CHROMIUM= to skip the browser check)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
echo "browser: $(chromium --version 2>/dev/null | head -n1)"
