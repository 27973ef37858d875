"""`gateway serve --processes N`: N gateway processes on one port and one store, under a small supervisor.

The supervisor binds the listening addresses once (so a busy port fails before anything starts), then
makes one socket per process with SO_REUSEPORT, where the kernel spreads new connections over the
processes. Each process is a whole gateway started afresh (`python -m gateway serve ... --listen-fds`):
its own event loop, store connection, group-commit writer and delivery worker. SQLite serialises the
processes' commits (WAL), Redis its scripts; claims are leased, so no delivery goes out twice.

When there are cores enough, each process is pinned to a core of its own (among those the supervisor
may use), unless `--no-pin` says otherwise: a process's SQLite writer, which holds the
file's write lock through its commit, then does not wait behind the other processes' threads for a
core when it wakes from its fsync.

The supervisor forwards SIGHUP (reload) and SIGTERM/SIGINT (drain and stop) to every process, restarts
one that dies after it has run a while, and stops them all when one dies while starting (a config or
store problem that a restart would only repeat). Metrics are gathered across processes through
prometheus_client's multiprocess mode: the processes write to one folder, any of them answers a scrape.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from gateway.errors import GatewayError
from gateway.ops.metrics import MULTIPROCESS_DIR_ENV

log = logging.getLogger("gateway.processes")

LISTEN_FDS_FLAG = "--listen-fds"
SUPERVISOR_ENV = "GATEWAY_SUPERVISOR_PID"

# A process that exits sooner than this after it started failed to start: restarting would only repeat it.
_START_WINDOW_S = 10.0
_RESTART_DELAY_S = (1.0, 30.0)  # first and longest wait before restarting a process that died
_POLL_S = 0.2


def process_count(value: str) -> int:
    """`--processes`: a positive number, or `auto` for one per core this process may run on."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise GatewayError(f"--processes must be a positive number or 'auto', not {value!r}")
    return count


def cores_for(count: int, pin: bool) -> list[int | None]:
    """The core each of `count` processes is pinned to, one of those this process may run on; None for each when
    pinning is off, or when the processes cannot have a core each (a single core, more processes than cores, or
    no `sched_setaffinity` on this system): processes sharing a pinned core could not move to an idle one."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if not pin or len(usable) < 2 or count > len(usable):
        return [None] * count
    return list(usable[:count])


def inherited_sockets(fds: str) -> list[socket.socket]:
    """The listening sockets the supervisor handed this process (`--listen-fds 3,4`)."""
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]


def stop_when_orphaned() -> None:
    """In a supervised process: drain and stop (SIGTERM to itself) if the supervisor goes away, even by kill -9.

    The supervisor names itself (SUPERVISOR_ENV): a process it started is compared with that pid, not with its
    parent when it looked, for the supervisor may be gone before the process has finished starting.
    """
    supervisor = int(os.environ.get(SUPERVISOR_ENV, os.getppid()))

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone; stopping", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="gateway-orphan-watch", daemon=True).start()


def reuse_port_copies(bound: Sequence[socket.socket], count: int) -> list[list[socket.socket]]:
    """`count` sets of listening sockets on the addresses of `bound`, with SO_REUSEPORT; `bound` is closed.

    `bound` was bound without SO_REUSEPORT, so a port taken by anyone (another gateway included) failed
    there. Closing it and binding again at once leaves no window worth the name.
    """
    addresses = [(sock.family, sock.getsockname()[:2]) for sock in bound]
    for sock in bound:
        sock.close()
    sets: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            sets.append([_reuse_port_socket(family, address) for family, address in addresses])
    except OSError as exc:
        for each in sets:
            for sock in each:
                sock.close()
        raise GatewayError(f"cannot share the listening port between processes: {exc.strerror or exc}") from None
    return sets


def _reuse_port_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


@dataclass
class _Child:
    index: int
    sockets: list[socket.socket]
    core: int | None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_delay_s: float = _RESTART_DELAY_S[0]
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Runs `argv` (a `gateway serve` command line) once per socket set and keeps the processes going."""

    argv: list[str]
    socket_sets: list[list[socket.socket]]
    cores: list[int | None]
    children: list[_Child] = field(default_factory=list)
    stopping: bool = False
    failed: str | None = None

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        env = {**os.environ, MULTIPROCESS_DIR_ENV: metrics_dir, SUPERVISOR_ENV: str(os.getpid())}
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self.children = [_Child(index, sockets, core)
                             for index, (sockets, core) in enumerate(zip(self.socket_sets, self.cores, strict=True))]
            for child in self.children:
                self._start(child, env)
            pinned = "" if self.cores[0] is None else f", on cores {', '.join(str(core) for core in self.cores)}"
            log.info("serving with %d processes (pids %s%s)", len(self.children),
                     ", ".join(str(child.process.pid) for child in self.children if child.process), pinned)
            while not self.stopping or any(child.process for child in self.children):
                self._watch(env)
                time.sleep(_POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sockets in self.socket_sets:
                for sock in sockets:
                    sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if self.failed:
            log.error("%s; stopped every process", self.failed)
            return 1
        return 0

    def _start(self, child: _Child, env: dict[str, str]) -> None:
        fds = [sock.fileno() for sock in child.sockets]
        command = [*self.argv, LISTEN_FDS_FLAG, ",".join(map(str, fds))]
        # Its own process group: a Ctrl-C at the terminal reaches the supervisor, which stops the processes once.
        child.process = subprocess.Popen(command, pass_fds=fds, env=env, process_group=0)
        if child.core is not None:  # the interpreter is still starting: the threads it makes later inherit this
            try:
                os.sched_setaffinity(child.process.pid, {child.core})
            except OSError as exc:
                log.warning("process %d runs on any core: pinning it to core %d failed: %s", child.index, child.core,
                            exc.strerror or exc)  # fmt: skip
        child.started_at = time.monotonic()
        child.restart_at = None

    def _watch(self, env: dict[str, str]) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                    log.info("restarting process %d", child.index)
                    self._start(child, env)
                continue
            code = child.process.poll()
            if code is None:
                continue
            pid, child.process = child.process.pid, None
            if self.stopping:
                continue
            if now - child.started_at < _START_WINDOW_S:
                self.failed = f"process {child.index} (pid {pid}) exited while starting (exit code {code})"
                self._signal_all(signal.SIGTERM)
                self.stopping = True
                continue
            log.error("process %d (pid %d) exited with code %s; restarting it in %.0f s",
                      child.index, pid, code, child.restart_delay_s)
            child.restart_at = now + child.restart_delay_s
            child.restart_delay_s = min(child.restart_delay_s * 2, _RESTART_DELAY_S[1])

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._signal_all(signal.SIGHUP)
            return
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)


def child_argv(argv: Sequence[str]) -> list[str]:
    """This command line as each process runs it: the same options, one process each."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        rest.append(arg)
    return [sys.executable, "-m", "gateway", *rest]
