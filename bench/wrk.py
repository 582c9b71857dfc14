"""The load generator: wrk (Debian package) driven by a generated Lua script.

Rule: every request is a real JSON-RPC `tools/call` POST with the headers an MCP client sends
(Authorization, Mcp-Session-Id from a prior initialize, MCP-Protocol-Version, Accept). When the
target needs one fresh identity assertion per request (a shim without a gateway), each wrk
thread takes its own slice of pre-minted assertions from a file. wrk's own CPU time is measured
so a report can show the generator was not the bottleneck.
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
local token_file = {token_file}
local token_headers = {token_headers}
local threads_total = {threads}
local count = 0
local index = 0
local tokens = nil
local threads = {{}}
statuses = {{}}

function setup(thread)
  thread:set("thread_id", count)
  count = count + 1
  threads[#threads + 1] = thread
end

function response(status, headers, body)
  if status >= 300 then statuses[status] = (statuses[status] or 0) + 1 end
end

function init(args)
  if token_file ~= nil then
    tokens = {{}}
    local n = 0
    for line in io.lines(token_file) do
      if n % threads_total == thread_id then
        local row = {{}}
        for field in string.gmatch(line, "[^\t]+") do row[#row + 1] = field end
        tokens[#tokens + 1] = row
      end
      n = n + 1
    end
  end
end

function request()
  local headers = base
  if tokens ~= nil then
    index = index + 1
    headers = {{}}
    for k, v in pairs(base) do headers[k] = v end
    local row = tokens[index] or {{"exhausted"}}
    for i, name in ipairs(token_headers) do headers[name] = row[i] end
  end
  return wrk.format("POST", nil, headers, body)
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
        token_file = None
        names: list[str] = list(tokens[0]) if tokens else []
        if tokens is not None:
            token_file = str(Path(tmp) / "tokens")
            lines = ("\t".join(row[name] for name in names) for row in tokens)
            Path(token_file).write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "call.lua"
        script.write_text(
            SCRIPT.format(
                body=lua_string(body.decode()),
                headers=lua_table(headers),
                token_file=lua_string(token_file),
                token_headers="{" + ", ".join(json.dumps(name) for name in names) + "}",
                threads=threads,
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
