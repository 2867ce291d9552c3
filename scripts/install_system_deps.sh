#!/usr/bin/env bash
# Install the Debian packages slinfer needs, only those missing:
#   etcd-server     the cluster store (run directly on loopback; no systemd needed)
#   docker-compose  only to validate docker-compose.yml offline (tests)
set -euo pipefail
want=()
command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
if [ "${1:-}" = "--with-compose" ]; then
  command -v docker-compose >/dev/null 2>&1 || want+=(docker-compose)
fi
[ ${#want[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root to apt-get install ${want[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing ${want[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# Debian's etcd-server package may start a system etcd on 2379; slinfer runs its own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl stop etcd || true
fi
