#!/usr/bin/env bash
# Installs the Debian packages the tests use, only those missing: redis-server (the Redis store's tests start
# a real one) and chromium (the dashboard's browser test). Needs root, or sudo, for apt-get.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi
echo "== $(redis-server --version)"
echo "== $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: version not readable')"
