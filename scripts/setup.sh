#!/usr/bin/env bash
# setup.sh: installs the Debian 12 packages Quaver builds, runs and tests with.
#
# Idempotent and fast on a second run: it asks dpkg-query what is already installed and only
# touches the network (apt-get update + install) when something is missing, so a machine that
# has everything never needs the network. As root it installs; as any other user it prints the
# command to run and exits 1 when something is missing.
#
# We run our own PostgreSQL (scripts/run.sh, tests/conftest.py) and our own redis-server on
# private ports, so services that Debian would start on install are kept from starting, and the
# cluster that postgresql-15 may create is set to manual start.
set -euo pipefail

# What the build needs.
BUILD_PKGS=(
  build-essential cmake pkg-config
  libzmq3-dev libczmq-dev libpq-dev libhiredis-dev libcivetweb-dev libmsgpack-dev
  libprotobuf-c-dev protobuf-c-compiler libsodium-dev libjansson-dev libjwt-dev zlib1g-dev
  libmpg123-dev libsndfile1-dev
)
# What `make run` needs.
RUN_PKGS=(postgresql-15 postgresql-15-hypopg redis-server redis-tools curl)
# What `make test` needs: the Python driver of the integration tests (Debian's own python3),
# protoc for the Python protobuf modules, lame for MP3 fixtures, promtool (in prometheus),
# clang with its runtime for the libFuzzer harnesses (clang only recommends libclang-rt, and
# we install without recommends).
TEST_PKGS=(
  python3 python3-zmq python3-pytest python3-websocket python3-protobuf python3-requests
  python3-yaml protobuf-compiler lame prometheus clang libclang-rt-14-dev
)

want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${TEST_PKGS[@]}")
# deploy/ tests render the manifests with kubectl; Debian's kubectl only when there is none.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x /usr/bin/kubectl ]; then
  want+=(kubernetes-client)
fi

missing=()
for p in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#want[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: install them as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Keep postinst scripts from starting PostgreSQL, Redis or Prometheus as system services
# while we install (invoke-rc.d honours policy-rc.d's 101). Leave an existing policy alone.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null

# A cluster Debian created for postgresql-15 is not ours: don't let it start at boot.
for conf in /etc/postgresql/15/*/start.conf; do
  [ -f "$conf" ] || continue
  if grep -qx 'auto' "$conf"; then
    sed -i 's/^auto$/manual/' "$conf"
  fi
done

# Check that what the rest of the tooling calls is now there.
for bin in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/pg_ctl \
           /usr/bin/redis-server /usr/bin/protoc /usr/bin/protoc-c /usr/bin/python3; do
  if [ ! -x "$bin" ]; then
    echo "setup: $bin is still missing after install" >&2
    exit 1
  fi
done
echo "setup: done"
