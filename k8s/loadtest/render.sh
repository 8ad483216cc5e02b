#!/usr/bin/env bash
# Renders the load-test Job for one run: the project, region and bucket filled in, the run's id
# (its reports go to gs://BUCKET/loadtest/RUN_ID/part-I/) and the start every part waits for.
# LOADTEST_RATE and LOADTEST_DURATION, when set, replace the Job's --rate and --duration.
# Refuses to print a render with a placeholder left.
#   k8s/loadtest/render.sh my-project southamerica-east1 my-loadtest-bucket run-1 2026-12-07T14:00:00Z
set -euo pipefail
if [ $# -ne 5 ]; then
  echo "usage: $0 PROJECT REGION BUCKET RUN_ID START_AT" >&2
  exit 2
fi
project=$1 region=$2 bucket=$3 run=$4 start=$5
for value in "$project" "$region" "$bucket" "$run" "$start" "${LOADTEST_RATE:-}" "${LOADTEST_DURATION:-}"; do
  # Values go into sed expressions and YAML: nothing that could end either.
  if [[ ! $value =~ ^[A-Za-z0-9:._+-]*$ ]]; then
    echo "$value: only letters, digits and : . _ + - are allowed" >&2
    exit 2
  fi
done
root=$(cd "$(dirname "$0")/../.." && pwd)
rendered=$(kubectl kustomize "$root/k8s/loadtest" | sed \
  -e "s/PROJECT_ID/$project/g" \
  -e "s/REGION-docker\.pkg\.dev/$region-docker.pkg.dev/g" \
  -e "s#gs://BUCKET/loadtest/RUN_ID/#gs://$bucket/loadtest/$run/#" \
  -e "s/value: START_AT$/value: \"$start\"/" \
  ${LOADTEST_RATE:+-e "s/--rate=.*/--rate=$LOADTEST_RATE/"} \
  ${LOADTEST_DURATION:+-e "s/--duration=.*/--duration=$LOADTEST_DURATION/"})
if grep -nE 'PROJECT_ID|REGION-|BUCKET|RUN_ID|value: START_AT' <<< "$rendered"; then
  echo "placeholders left (above)" >&2
  exit 1
fi
echo "$rendered"
