#!/usr/bin/env bash
# Renders an overlay for a real project: PROJECT_ID and REGION filled in, and each image given as
# NAME@sha256:… pinned by digest (what the deploy workflow applies). Refuses to print a render in
# which a pixguard image is not pinned or a placeholder is left.
#   k8s/render.sh production my-project southamerica-east1 \
#     southamerica-east1-docker.pkg.dev/my-project/pixguard/pixguard-cuda@sha256:…
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OVERLAY PROJECT REGION [IMAGE@sha256:DIGEST]..." >&2
  exit 2
fi
overlay=$1 project=$2 region=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
# Kustomize takes only a relative path to another kustomization: work two levels below the root.
mkdir -p "$root/target"
work=$(mktemp -d "$root/target/render.XXXXXX")
trap 'rm -rf "$work"' EXIT
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - ../../k8s/overlays/$overlay"
  echo "images:"
  for pinned in "$@"; do
    case "$pinned" in
      *@sha256:*) ;;
      *) echo "$pinned: not NAME@sha256:DIGEST" >&2; exit 2 ;;
    esac
    name=${pinned%@*}
    # The overlays name images with the placeholders; match them as written there.
    placeholder=${name/#"$region-docker.pkg.dev/$project/"/REGION-docker.pkg.dev/PROJECT_ID/}
    echo "  - name: $placeholder"
    echo "    newName: $name"
    echo "    digest: ${pinned#*@}"
  done
} > "$work/kustomization.yaml"
kubectl kustomize "$work" \
  | sed -e "s/PROJECT_ID/$project/g" -e "s/REGION-docker\.pkg\.dev/$region-docker.pkg.dev/g" \
  > "$work/rendered.yaml"
if grep -nE 'PROJECT_ID|REGION-docker' "$work/rendered.yaml" >&2; then
  echo "placeholders left in the render" >&2
  exit 1
fi
unpinned=$(grep -nE '^\s*image: .*/pixguard(-cuda)?(:[^@]*)?$' "$work/rendered.yaml" || true)
if [ -n "$unpinned" ]; then
  echo "pixguard images not pinned by digest:" >&2
  echo "$unpinned" >&2
  exit 1
fi
cat "$work/rendered.yaml"
