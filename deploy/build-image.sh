#!/usr/bin/env bash
# Builds the container image `themis:local` (or $THEMIS_IMAGE) from deploy/Dockerfile.
#
# Where the Rust image named by RUST_IMAGE can be used (pulled, or present), the binary is
# compiled inside it (BINARY_FROM=build). Otherwise (no image registry, as on CI), the static
# binary is built here with the musl target (rustup target add x86_64-unknown-linux-musl) and
# copied in (BINARY_FROM=host). Force one with BINARY_FROM=build|host.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${THEMIS_IMAGE:-themis:local}"
rust_image="${RUST_IMAGE:-docker.io/library/rust:1.89-alpine}"
from="${BINARY_FROM:-}"
if [ -z "$from" ]; then
  if docker image inspect "$rust_image" >/dev/null 2>&1 || docker pull -q "$rust_image" >/dev/null 2>&1; then
    from=build
  else
    from=host
  fi
fi
if [ "$from" = host ]; then
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "build-image.sh: installing the musl target (rustup target add x86_64-unknown-linux-musl)" >&2
    rustup target add x86_64-unknown-linux-musl
  fi
  echo "build-image.sh: building a static themis on this machine (musl target)" >&2
  CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p themis-cli
fi
echo "build-image.sh: docker build (BINARY_FROM=$from) -> $image" >&2
DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile \
  --build-arg BINARY_FROM="$from" --build-arg RUST_IMAGE="$rust_image" \
  -t "$image" .
