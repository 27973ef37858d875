"""Helpers shared by the benchmarks: processes pinned to cores, wrk runs, free ports."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "missive"
PYTHON = sys.executable


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) used so far by a process and its children still running.

    NaN where /proc is missing. Children count so that `serve --processes N` is measured whole.
    """
    total = 0.0
    for each in (pid, *_children(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if each == pid:
                return float("nan")
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        direct = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [grandchild for child in direct for grandchild in (child, *_children(child))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: int | None, command: list[str]) -> list[str]:
    """`command` pinned to one core when taskset exists (server and load generator apart); None leaves it free."""
    if core is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", str(core), *command]


def largest_rss_mb(pid: int) -> float:
    """The resident memory of the largest of a process and its children, in MB: one gateway process's, whether
    `pid` serves itself or supervises `serve --processes N`. NaN where /proc is missing."""
    sizes = []
    for each in (pid, *_children(pid)):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return max(sizes, default=float("nan"))


@contextlib.contextmanager
def running(
    command: list[str], health_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until `health_url` answers, stop it (SIGTERM) afterwards.

    Its output goes to a temporary file (a pipe nobody reads would block it once full).
    """
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=output, stderr=output)
        try:
            wait_until_up(health_url, process, output)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until_up(url: str, process: subprocess.Popen[bytes], output: IO[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"server exited early:\n{output.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def wrk(url: str, lua: Path, seconds: int, connections: int, core: int | None) -> WrkResult:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    output = subprocess.run(
        pinned(core, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url]),
        capture_output=True, text=True, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(rate, _latency(output, "50%"), _latency(output, "99%"), int(non_2xx.group(1)) if non_2xx else 0)


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\b", output)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def varied_bodies(count: int, seed: int = 7) -> list[bytes]:
    """`count` incoming-email events of one team, as Missive would send them: the same organisation, team,
    users and labels, each with its own conversation, message, sender, subject, preview and times.

    Routes match them as they match the fixture; stores cannot compress them down to one repeated body.
    """
    rng = random.Random(seed)
    template = json.loads((FIXTURES / "incoming-email-with-labels.json").read_bytes())
    words = ("order invoice refund shipping delayed damaged quote pricing urgent thanks account billing "
             "pallet customs tracking replacement warranty discount contract renewal").split()
    first = ["Priya", "Tomasz", "Amara", "Kenji", "Lucia", "Omar", "Freya", "Diego", "Hana", "Ivan"]
    last = ["Natarajan", "Wojcik", "Okafor", "Sato", "Ferreira", "Haddad", "Larsen", "Morales", "Kim", "Petrov"]
    bodies = []
    for _ in range(count):
        event = json.loads(json.dumps(template))
        conversation, message = event["conversation"], event["message"]
        old_id, new_id = conversation["id"], str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = f"{rng.choice(first)} {rng.choice(last)}"
        address = f"{name.lower().replace(' ', '.')}{rng.randint(1, 999)}@{rng.choice(['example.org', 'example.net'])}"
        subject = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))).capitalize()
        conversation["id"], conversation["latest_message_subject"] = new_id, subject
        conversation["web_url"] = conversation["web_url"].replace(old_id, new_id)
        conversation["app_url"] = conversation["app_url"].replace(old_id, new_id)
        conversation["authors"] = [{"name": name, "address": address}]
        conversation["created_at"] += rng.randint(0, 10**7)
        message["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        message["subject"] = subject
        message["preview"] = " ".join(rng.choice(words) for _ in range(rng.randint(10, 30)))
        message["from_field"] = {**message["from_field"], "name": name, "address": address}
        message["delivered_at"] = conversation["created_at"] + rng.randint(0, 100)
        bodies.append(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    return bodies


def wrk_post_many_script(path: Path, bodies: list[bytes], signatures: list[str], headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs `bodies` in turn, each with its own X-Hook-Signature, and `headers`."""
    lines = [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()]
    lines.append("local bodies = {" + ",\n".join(_lua_string(body.decode()) for body in bodies) + "}")
    lines.append("local signatures = {" + ",\n".join(_lua_string(value) for value in signatures) + "}")
    lines += [
        "local next_one = 0",
        "request = function()",
        "  next_one = next_one % #bodies + 1",
        '  wrk.headers["X-Hook-Signature"] = signatures[next_one]',
        '  return wrk.format("POST", nil, nil, bodies[next_one])',
        "end",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk_post_script(path: Path, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs `body` with `headers`."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    lines += [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'
