"""A throwaway ``redis-server`` for tests that stop, pause or restart Redis.

It listens on a free loopback port, keeps nothing on disk (``--save ""
--appendonly no``) and runs in a temporary directory. Tests that only need
a Redis use the shared server (the ``redis_url`` fixture) instead.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

__all__ = ["RedisServer", "running_server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="pat-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client for inspecting or poking the server."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert self._proc is None, "already running"
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *self._no_disk()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server (SIGKILL: like a crash) and wait for it to exit."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def _no_disk(self) -> list[str]:
        return ["--save", "", "--appendonly", "no", "--dir", self._dir.name]

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a silent death)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


def running_server() -> Iterator[RedisServer]:
    """Body of a fixture: a running throwaway Redis, killed afterwards.

    Use as ``yield from running_server()`` in a test module's fixture.
    """
    from conftest import skip_or_fail

    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not on PATH")
    server = RedisServer()
    server.start()
    yield server
    server.close()
