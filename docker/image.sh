#!/usr/bin/env bash
# Builds the runtime image from a static binary built here (no registry,
# no base image: docker/Containerfile) with buildah, then runs it as the
# DaemonSet would: tests/deploy.rs, `the_image_runs_the_configmap_as_the_daemonset_says`.
# Called by .ci/run. Installs buildah from Debian's packages when missing;
# skips with a line saying why only where the machine cannot build or run
# an image (no buildah to install, not root).
#   bash docker/image.sh          build, report the size, run the test
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
image=localhost/switchyard:test
export STORAGE_DRIVER=vfs

if [ "$(id -u)" != 0 ]; then
  echo "image: not root, so buildah cannot run an image here: image test skipped"
  exit 0
fi
if ! command -v buildah >/dev/null || ! command -v setcap >/dev/null \
    || ! [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  (apt-get update -qq && apt-get install -y -qq buildah libcap2-bin ca-certificates) >/dev/null 2>&1 \
    || true
fi
if ! command -v buildah >/dev/null; then
  echo "image: buildah not installable here: image test skipped"
  exit 0
fi

# A static binary: it runs in an image holding nothing else.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin switchyard
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "target/$target/release/switchyard" "$context/switchyard"
strip "$context/switchyard"
# Binds 80 and 443 as the non-root user (the pod must allow privilege
# escalation for a file capability to count: see docker/k8s/daemonset.yaml).
setcap cap_net_bind_service=+ep "$context/switchyard"
cp /etc/ssl/certs/ca-certificates.crt "$context/"
buildah bud --quiet --layers=false -f docker/Containerfile -t "$image" "$context" >/dev/null
size=$(buildah images --format '{{.Size}}' "$image")
echo "image: $image built, $size (binary $(stat -c %s "$context/switchyard" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"

SWITCHYARD_IMAGE="$image" cargo test --locked --test deploy -- --ignored --exact \
  the_image_runs_the_configmap_as_the_daemonset_says
