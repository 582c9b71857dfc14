"""The load generator: wrk (Debian package) driven by a generated Lua script.

Rule: every request is a real JSON-RPC `tools/call` POST with the headers an MCP client sends
(Authorization, Mcp-Session-Id from a prior initialize, MCP-Protocol-Version, Accept). When the
target needs one fresh identity assertion per request (a shim without a gateway), each wrk
thread takes its own slice of pre-minted assertions from a file of its own, small and read whole
at start: wrk starts its first thread before it initialises the second, and counts the first
thread's requests of that time without counting the time, so a slow start-up inflates the rate.
Requests are built by one string concatenation. wrk's own CPU time is measured so a report can
show the generator was not the bottleneck.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import tree_cpu_seconds

SCRIPT = """
local body = {body}
local base = {headers}
local token_files = {token_files}
local token_headers = {token_headers}
local count = 0
local threads = {{}}
statuses = {{}}

wrk.method = "POST"
wrk.body = body
for name, value in pairs(base) do wrk.headers[name] = value end

function setup(thread)
  thread:set("thread_id", count)
  count = count + 1
  threads[#threads + 1] = thread
end

function response(status, headers, body)
  if status >= 300 then statuses[status] = (statuses[status] or 0) + 1 end
end

if token_files ~= nil then
  -- Each thread reads its own file whole and takes one line per request: init must be quick,
  -- because wrk counts the requests of the first thread while it initialises the second one.
  -- An empty field repeats the value the field had on the line before.
  local data = ""
  local position = 1
  local fields = #token_headers
  local current = {{}}
  local parts = {{}}

  function init(args)
    local file = assert(io.open(token_files[thread_id + 1], "rb"))
    data = file:read("*a")
    file:close()
    local request = wrk.format()
    local cut = string.find(request, "\\r\\n", 1, true)
    parts[1] = string.sub(request, 1, cut + 1)
    for i, name in ipairs(token_headers) do
      parts[3 * i - 1] = name .. ": "
      parts[3 * i + 1] = "\\r\\n"
    end
    parts[3 * fields + 2] = string.sub(request, cut + 2)
  end

  function request()
    local line_end = string.find(data, "\\n", position, true)
    if line_end == nil then
      for i = 1, fields do current[i] = "exhausted" end
    else
      local from = position
      for i = 1, fields do
        local stop = line_end
        if i < fields then stop = string.find(data, "\\t", from, true) end
        if stop > from then current[i] = string.sub(data, from, stop - 1) end
        from = stop + 1
      end
      position = line_end + 1
    end
    for i = 1, fields do parts[3 * i] = current[i] end
    return table.concat(parts)
  end
end

function done(summary, latency, requests)
  local seen = {{}}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do seen[code] = (seen[code] or 0) + n end
  end
  local parts = {{}}
  for code, n in pairs(seen) do parts[#parts + 1] = string.format("\\"%d\\": %d", code, n) end
  io.write("WRKSTATUS {{" .. table.concat(parts, ", ") .. "}}\\n")
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"non2xx\\": %d, " ..
    "\\"errors\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d, " ..
    "\\"mean_us\\": %.1f, \\"max_us\\": %d}}\\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def lua_string(text: str | None) -> str:
    return "nil" if text is None else json.dumps(text)


def lua_table(values: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in values.items()) + "}"


def token_lines(rows: Sequence[Mapping[str, str]], names: Sequence[str]) -> str:
    """One thread's requests as the script reads them: a line per request, its header values in
    ``names`` order separated by tabs, a value equal to the line before's left empty (one
    assertion serves a run of requests, so the file stays small and is read quickly)."""
    lines = []
    previous: list[str] = [""] * len(names)
    for row in rows:
        values = [row[name] for name in names]
        for value in values:
            if not value or any(c in value for c in "\t\n\r"):
                raise ValueError(f"a header value for wrk must be non-empty, one line: {value!r}")
        lines.append("\t".join("" if v == p else v for v, p in zip(values, previous, strict=True)))
        previous = values
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class Load:
    """One wrk run's outcome; latencies in milliseconds."""

    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    wrk_cpu_percent: float
    target_cpu_percent: float
    cpu_us_per_request: dict[str, float]
    statuses: dict[str, int]

    @property
    def ok_rps(self) -> float:
        """Requests per second that got a 2xx answer."""
        return self.rps * (self.requests - self.non2xx) / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "rps": round(self.rps, 1),
            "okRps": round(self.ok_rps, 1),
            "p50Ms": round(self.p50_ms, 3),
            "p90Ms": round(self.p90_ms, 3),
            "p99Ms": round(self.p99_ms, 3),
            "meanMs": round(self.mean_ms, 3),
            "requests": self.requests,
            "non2xx": self.non2xx,
            "socketErrors": self.socket_errors,
            "errorStatuses": self.statuses,
            "wrkCpuPercent": round(self.wrk_cpu_percent, 1),
            "targetCpuPercent": round(self.target_cpu_percent, 1),
            "cpuUsPerRequest": {k: round(v, 1) for k, v in self.cpu_us_per_request.items()},
        }


def ensure_wrk() -> str:
    """The wrk binary; installs the Debian package when missing (root only)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is not None:
        subprocess.run([apt, "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "wrk is required and could not be installed: run `sudo apt-get install -y wrk` "
        "(Debian/Ubuntu) and try again"
    )


def run_wrk(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connections: int,
    seconds: float,
    target_pids: Mapping[str, int],
    tokens: Sequence[Mapping[str, str]] | None = None,
) -> Load:
    """Runs wrk for ``seconds`` against ``url``; CPU% of wrk and of the target processes, and
    each target's CPU time per request (``target_pids`` by name), which contention from other
    work on the machine does not change. With ``tokens``, each request gets the headers of the
    next one (all with the same names)."""
    threads = 1 if connections == 1 else 2
    with tempfile.TemporaryDirectory(prefix="corral-wrk-") as tmp:
        token_files = "nil"
        names: list[str] = list(tokens[0]) if tokens else []
        if tokens is not None:
            paths = [Path(tmp) / f"tokens-{thread}" for thread in range(threads)]
            for thread, path in enumerate(paths):
                path.write_text(token_lines(tokens[thread::threads], names))
            token_files = "{" + ", ".join(lua_string(str(path)) for path in paths) + "}"
        script = Path(tmp) / "call.lua"
        script.write_text(
            SCRIPT.format(
                body=lua_string(body.decode()),
                headers=lua_table(headers),
                token_files=token_files,
                token_headers="{" + ", ".join(json.dumps(name) for name in names) + "}",
            )
        )
        argv = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"]
        argv += ["--timeout", "10s", "-s", str(script), url]
        before = {name: tree_cpu_seconds(pid) for name, pid in target_pids.items()}
        started = time.monotonic()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
            wrk_cpu = 0.0
            while process.poll() is None:
                wrk_cpu = max(wrk_cpu, _safe_cpu(process.pid))
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            output = process.stdout.read().decode() if process.stdout else ""
        used = {name: tree_cpu_seconds(pid) - before[name] for name, pid in target_pids.items()}
    line = next((x for x in output.splitlines() if x.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {output[-2000:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    status_line = next((x for x in output.splitlines() if x.startswith("WRKSTATUS ")), "")
    statuses = json.loads(status_line.removeprefix("WRKSTATUS ") or "{}")
    duration = data["duration_us"] / 1e6
    count = max(1, data["requests"])
    return Load(
        connections=connections,
        rps=data["requests"] / duration,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        requests=data["requests"],
        non2xx=data["non2xx"],
        socket_errors=data["errors"],
        wrk_cpu_percent=100 * wrk_cpu / elapsed,
        target_cpu_percent=100 * sum(used.values()) / elapsed,
        cpu_us_per_request={name: 1e6 * cpu / count for name, cpu in used.items()},
        statuses=statuses,
    )


def _safe_cpu(pid: int) -> float:
    try:
        return tree_cpu_seconds(pid)
    except OSError:
        return 0.0
