#!/usr/bin/env bash
# Builds the container image `themis:local` (or $THEMIS_IMAGE) from deploy/Dockerfile.
#
# Where the Rust image RUST_IMAGE is present or can be pulled, the image is built the standard
# multi-stage way (the binary compiled inside it). Otherwise (no image registry, as on CI), the
# static binary is built here with the musl target (rustup target add
# x86_64-unknown-linux-musl) and the Dockerfile's `host` stage copies it onto scratch, from a
# context holding only that binary. Force one with BINARY_FROM=build|host.
#
#   deploy/build-image.sh                  build the image
#   deploy/build-image.sh --binary-only    only the static binary (the `host` way's first half;
#                                          .ci/run builds it while the tests run)
#
# The static binary is built in its own target directory (target/image), so that this build
# never waits for, or makes wait, a `cargo test` using target/.
set -euo pipefail
cd "$(dirname "$0")/.."
binary_only=0
case "${1:-}" in
  --binary-only) binary_only=1; from=host ;;
  "") ;;
  *) echo "usage: deploy/build-image.sh [--binary-only]" >&2; exit 2 ;;
esac
image="${THEMIS_IMAGE:-themis:local}"
rust_image="${RUST_IMAGE:-docker.io/library/rust:1.89-alpine}"
from="${from:-${BINARY_FROM:-}}"
if [ -z "$from" ]; then
  if docker image inspect "$rust_image" >/dev/null 2>&1 || docker pull -q "$rust_image" >/dev/null 2>&1; then
    from=build
  else
    from=host
  fi
fi
if [ "$from" = build ]; then
  echo "build-image.sh: multi-stage build in $rust_image -> $image" >&2
  exec docker build -f deploy/Dockerfile --build-arg RUST_IMAGE="$rust_image" -t "$image" .
fi
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "build-image.sh: installing the musl target (rustup target add x86_64-unknown-linux-musl)" >&2
  rustup target add x86_64-unknown-linux-musl
fi
echo "build-image.sh: building a static themis on this machine (musl target)" >&2
tdir=target/image
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo build --release --locked --target x86_64-unknown-linux-musl --target-dir "$tdir" -p themis-cli
bin="$tdir/x86_64-unknown-linux-musl/release/themis"
[ "$binary_only" = 0 ] || { echo "build-image.sh: built $bin" >&2; exit 0; }
# A context with only what the `host` stage copies (not the repository's gigabytes of target/).
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/x86_64-unknown-linux-musl/release" "$ctx/deploy/image"
cp "$bin" "$ctx/target/x86_64-unknown-linux-musl/release/"
cp -r deploy/image/data "$ctx/deploy/image/"
echo "build-image.sh: docker build --target host -> $image" >&2
DOCKER_BUILDKIT=0 docker build -q -f deploy/Dockerfile --target host -t "$image" "$ctx"
