#!/usr/bin/env bash
# What reason codes cost the JSON API: /v1/score saturation throughput with reasons on (every HOLD
# and REJECT explained, the default) against reasons off (`decisions.reasons=false`), the same load
# generator and the same 10,000 synth transactions (seed 7, the default fraud rate). Two servers
# pinned to CPU 0, `pixguard bench` (closed loop) to CPU 1; the two take turns for ROUNDS rounds
# and the medians are compared.
#
#   benches/reasons.sh                    # CONCURRENCY=16 DURATION=5 WARMUP=1 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/bench/reasons}
source benches/pinned.sh
start on 18291
start off 18292 --set decisions.reasons=false

# How many of these transactions a server explains unasked: its HOLD and REJECT answers.
"$bin" synth --rows 10000 --seed 7 2> /dev/null \
  | python3 -c 'import json, sys; [print(json.dumps({"transactions": [json.loads(l)["transaction"]]})) for l in sys.stdin]' \
  > "$OUT/requests.jsonl"
python3 - "$OUT/requests.jsonl" <<'PY'
import json, sys, urllib.request
held = with_reasons = 0
lines = open(sys.argv[1]).read().splitlines()
for line in lines:
    req = urllib.request.Request("http://127.0.0.1:18291/v1/score", data=line.encode(),
                                 headers={"content-type": "application/json"})
    r = json.load(urllib.request.urlopen(req))["results"][0]
    held += r["decision"] != "ALLOW"
    with_reasons += "reasons" in r
print(f"{held} of {len(lines)} transactions HOLD or REJECT; {with_reasons} answered with reasons")
PY

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, closed loop c=$CONCURRENCY, ${DURATION}s, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  for label in on off; do
    port=18291
    [ "$label" = off ] && port=18292
    taskset -c 1 "$bin" bench --api v1 --url "http://127.0.0.1:$port" --transactions 10000 --seed 7 \
      --duration "$DURATION" --warmup "$WARMUP" --threads 1 --no-progress --mode closed \
      --concurrency "$CONCURRENCY" --label "$label-r$round" --out "$OUT/$label-r$round" \
      > /dev/null 2> "$OUT/$label-r$round.log"
  done
done
(cd "$OUT" && python3 - <<'PY'
import glob, json, statistics
def rps(label):
    return [json.load(open(f))["steps"][0]["achieved_rps"] for f in sorted(glob.glob(f"{label}-r*/report.json"))]
on, off = rps("on"), rps("off")
print("reasons on :", " · ".join(f"{r:.0f}" for r in on), f"median {statistics.median(on):.0f}/s")
print("reasons off:", " · ".join(f"{r:.0f}" for r in off), f"median {statistics.median(off):.0f}/s")
print(f"on ÷ off = {statistics.median(on) / statistics.median(off):.3f}")
PY
)
