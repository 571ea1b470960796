#!/usr/bin/env bash
# Installs the Debian packages the tests, the demo and the benchmarks use. Quiet and quick when they are
# already there; needs root (or sudo) otherwise.
set -euo pipefail
packages=(postgresql mariadb-server redis-server redis-tools btrfs-progs restic chromium fonts-dejavu-core util-linux e2fsprogs strace etcd-server etcd-client prometheus docker-registry apache2-utils poppler-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: missing Debian packages (${missing[*]}) and not root" >&2; exit 1; }
  sudo=sudo
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services must not run: tests start their own throw-away instances (prometheus is there
# for promtool, which checks and unit-tests the shipped alert rules).
for svc in postgresql mariadb redis-server etcd prometheus docker-registry; do
  $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
done
