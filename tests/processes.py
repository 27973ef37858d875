"""Real `gateway serve` processes for tests: start, wait for /healthz, kill -9, restart, stop.

    async with GatewayProcess(config_path, free_port(), tmp_path / "gateway.log") as gateway:
        await gateway.start()
        ... POST to gateway.url("/hooks/missive") ...
        await gateway.kill()      # SIGKILL: no shutdown code runs
        await gateway.start()     # the same config, store file and port
        assert await gateway.stop() == 0

Output of every run is appended to one log file; `tail()` shows its end in assertion messages.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from types import TracebackType

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """`python -m gateway serve -c CONFIG --port PORT`, started and stopped on demand; killed on exit at the latest."""

    def __init__(self, config: Path, port: int, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.port = port
        self.log_path = log_path
        self.extra_args = extra_args
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> GatewayProcess:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.running:
            await self.kill()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int:
        return self._require().pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start the process and return once /healthz answers 200."""
        if self.running:
            raise RuntimeError("the gateway is running already")
        command = [sys.executable, "-m", "gateway", "serve", "-c", str(self.config), "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command, *self.extra_args, "--log-format", "text", cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )
        try:
            async with asyncio.timeout(timeout_s):
                await self._wait_healthy()
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"gateway did not answer /healthz within {timeout_s:g} s:\n{self.tail()}") from None

    async def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; returns once the process is gone."""
        process = self._require()
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, a graceful shutdown; returns the exit code."""
        process = self._require()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            return await process.wait()

    def tail(self, chars: int = 4000) -> str:
        """The end of the log of every run so far."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _require(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the gateway was never started")
        return self._process

    async def _wait_healthy(self) -> None:
        process = self._require()
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"gateway exited with {process.returncode}:\n{self.tail()}")
                try:
                    async with session.get(self.url("/healthz"), timeout=aiohttp.ClientTimeout(total=1)) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
