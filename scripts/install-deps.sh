#!/usr/bin/env bash
# Installs every Debian 12 package ailb needs to build, run and test. Idempotent; run as root
# (or with sudo available). Packages already present are not downloaded again.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates curl
  libpistache-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev nlohmann-json3-dev libhnswlib-dev libsqlite3-dev
  libspdlog-dev libfmt-dev libcurl4-openssl-dev libssl-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev
  python3 python3-grpcio python3-grpc-tools
  prometheus
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
