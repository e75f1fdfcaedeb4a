#!/usr/bin/env bash
# Installs the Debian packages the tests use, only those missing: redis-server (the Redis store's tests start
# a real one) and chromium (the dashboard's browser test, which also runs CHROMIUM_PATH, or chromium,
# chromium-browser, google-chrome, google-chrome-stable or chrome found on the PATH). Needs root, or sudo, for apt-get.
set -euo pipefail
browser="${CHROMIUM_PATH:-}"
if [ -z "$browser" ]; then
  for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do
    browser="$(command -v "$name" 2>/dev/null || true)"
    [ -n "$browser" ] && break
  done
fi
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -n "$browser" ] && [ -x "$browser" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
  [ -n "$browser" ] && [ -x "$browser" ] || browser=/usr/bin/chromium
fi
echo "== $(redis-server --version)"
echo "== $("$browser" --version 2>/dev/null || echo "$browser: version not readable")"
