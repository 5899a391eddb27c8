#!/usr/bin/env bash
# Installs every Debian 12 package modelport needs to build, test, benchmark and fuzz.
# Idempotent: when everything is present it only asks dpkg and exits (well under a second);
# otherwise it runs `apt-get update` once and installs just the missing packages.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential make g++ cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format  # libFuzzer + sanitizer runtimes for clang; make format
  # libraries
  nlohmann-json3-dev libcli11-dev libssl-dev libxxhash-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libprotobuf-dev protobuf-compiler libonnx-dev  # ONNX: protobuf runtime + the onnx.proto classes
  libsqlite3-dev libpq-dev postgresql  # registry metadata: SQLite, libpq; a server for its tests
  libtorch-dev  # the TorchScript inference backend (libtorch C++ API; validate --allow-torchscript)
  libleveldb-dev libflatbuffers-dev flatbuffers-compiler libhdf5-dev  # TensorFlow formats (#9)
  # oracle tests and the benchmark's peers (run with /usr/bin/python3)
  python3 python3-numpy python3-torch python3-onnx python3-h5py libonnx-testdata
  xxhash  # xxhsum: the reference tool the XXH3 checksum is tested against
)

# One dpkg-query for all packages; unknown ones print nothing (and make it exit 1).
installed=" $(dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' "${PACKAGES[@]}" 2>/dev/null |
  awk -F'|' '$1 ~ /^ii/ { printf "%s ", $2 }' || true) "
missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg")
done

install_node_oracles() {
  # The independent readers the tests use as oracles (tests/node/package.json, pinned by its
  # lock file). Tests that need them skip when node is absent. Reinstalls when the lock file
  # changed since the last install (its sha256 is stamped inside node_modules).
  local dir lock_sha
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/node"
  command -v npm >/dev/null 2>&1 || return 0
  lock_sha="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ "$(cat "$dir/node_modules/.lock.sha256" 2>/dev/null)" != "$lock_sha" ]]; then
    echo "setup: npm ci in tests/node" >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund >&2)
    echo "$lock_sha" >"$dir/node_modules/.lock.sha256"
  fi
}

if [[ ${#missing[@]} -eq 0 ]]; then
  install_node_oracles
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: missing packages (${missing[*]}) and not root, no sudo; install them as root" >&2
    exit 1
  fi
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  "${missing[@]}"
install_node_oracles
