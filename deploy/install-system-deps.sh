#!/usr/bin/env bash
# Tools the project needs from the machine (usage: install-system-deps.sh [test]). Java 17, Maven and Go are expected (see README);
# this checks them with a clear message rather than failing later in a build.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=("java (OpenJDK 17)")
command -v mvn >/dev/null || missing+=("mvn (Maven)")
command -v go >/dev/null || missing+=("go (Go toolchain)")
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven golang-go >/dev/null
  else
    echo "missing: ${missing[*]} — install them, then re-run" >&2
    exit 1
  fi
fi
# Headless Chromium for the dashboard's browser test (Playwright drives Debian's build, no download):
# only `make test` (which passes "test") needs it.
if [ "${1:-}" = test ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "missing: /usr/bin/chromium (Debian package 'chromium') — needed by tests/api/test_dashboard_browser.py" >&2
  fi
fi
