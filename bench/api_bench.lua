-- wrk script of bench/api_bench.py: GETs the paths of a file (one per line) in turn,
-- with the API token of BENCH_TOKEN, and prints one line of JSON with the figures.
-- Usage: wrk -t1 -c16 -d10s -s bench/api_bench.lua http://127.0.0.1:PORT -- paths.txt
local paths = {}
local index = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  wrk.headers["Authorization"] = "Token " .. os.getenv("BENCH_TOKEN")
  wrk.headers["Accept"] = "application/json"
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean
  ))
end
