-- wrk script for POST /v1/score with bodies taken in turn from a JSONL file of transactions.
-- Usage: wrk -s benches/wrk/score.lua URL -- BODIES.jsonl [DELAY_MS]
-- DELAY_MS > 0 makes every connection pause that long between requests, to offer less than
-- saturation load (closed loop: no coordinated-omission correction; `pixguard bench` will do that).
local bodies = {}
local next_body = 1
local pause = 0

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  pause = tonumber(args[2] or "0")
  next_body = math.random(#bodies)
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function delay()
  return pause
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_s=%.2f rps=%.0f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
