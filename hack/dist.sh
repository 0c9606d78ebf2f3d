#!/usr/bin/env bash
# make dist: build the manager image with ko and write dist/install.yaml naming it by digest.
#
# ko builds cmd/manager (CGO_ENABLED=0, -trimpath) onto a base image made from nothing by
# hack/tools/ko/baseimage: CA certificates, the nonroot user 65532, no shell. That program
# serves the base from a registry on 127.0.0.1 for the length of the ko run, so nothing is
# pulled from the internet. The image is written as an OCI layout to dist/image and, with
# PUSH=true, pushed to KO_DOCKER_REPO. hack/dist then builds config/default with the image
# set to KO_DOCKER_REPO@<digest>.
#
#   KO_DOCKER_REPO  where the image is (to be) pushed; default ghcr.io/immutable-release/manager
#   PUSH            true to push it there (ko uses your docker credentials); default false
#   PLATFORMS       ko's --platform; default linux/amd64 (the base also has linux/arm64)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=$root/bin
repo=${KO_DOCKER_REPO:-ghcr.io/immutable-release/manager}
push=${PUSH:-false}
platforms=${PLATFORMS:-linux/amd64}

(cd hack/tools/ko && go build -o "$bin/baseimage" ./baseimage)
rm -rf dist/image
mkdir -p dist

# ko prints the image reference on stdout and its progress on stderr.
ref=$(KO_DOCKER_REPO=$repo "$bin/baseimage" -- "$bin/ko" build ./cmd/manager --bare \
  --platform="$platforms" --push="$push" --oci-layout-path=dist/image --sbom=none)
digest=${ref##*@}
case $digest in
  sha256:*) ;;
  *) echo "ko printed no digest: $ref" >&2; exit 1 ;;
esac

go run ./hack/dist -image "$repo@$digest" -out dist/install.yaml
if [ "$push" != true ]; then
  echo "The image is in dist/image (an OCI layout), not pushed. To publish it:"
  echo "  make dist KO_DOCKER_REPO=<registry>/<repository> PUSH=true"
fi
