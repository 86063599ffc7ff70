"""A real ``redis-server`` on a free loopback port, which tests can stop and start again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import free_port

__all__ = ["RedisServer", "SentinelServer", "free_port"]


class RedisServer:
    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (tests/run.sh installs it)")
        self.executable = executable
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="commons-router-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = Path(self._dir.name) / "redis.log"
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


class SentinelServer:
    """A Redis Sentinel (``redis-server --sentinel``) watching ``master`` as ``mymaster``."""

    def __init__(self, master: RedisServer, service: str = "mymaster") -> None:
        self.master = master
        self.service = service
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="commons-router-sentinel-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = Path(self._dir.name) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
        )
        self.process = subprocess.Popen(
            [self.master.executable, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        command = f"SENTINEL get-master-addr-by-name {self.service}\r\n".encode()
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(command)
                    if str(self.master.port).encode() in s.recv(256):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis sentinel did not start")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        self._dir.cleanup()
