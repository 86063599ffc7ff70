"""A network namespace of the test's own, holding pod addresses that are not loopback.

A real API server refuses EndpointSlice addresses in 127.0.0.0/8, so pods get addresses
from a small documentation subnet (RFC 5737 TEST-NET-2/3, a /29 chosen by the process id)
inside a network namespace this process creates (``ip netns add``, named with the pid),
joined to the host by a veth pair. Only these addresses receive the tests' traffic.
Servers listen inside it on sockets made there (``setns`` in a short-lived thread); the
test process reaches them through the veth. Needs root; without it, tests that need
pods to answer are skipped with the reason.
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_SUBNETS = [
    *ipaddress.ip_network("198.51.100.0/24").subnets(new_prefix=29),
    *ipaddress.ip_network("203.0.113.0/24").subnets(new_prefix=29),
]


class Unavailable(RuntimeError):
    """A network namespace cannot be made here; the message says why."""


def subnet_for(pid: int) -> ipaddress.IPv4Network:
    return _SUBNETS[pid % len(_SUBNETS)]


def pod_addresses(count: int, pid: int | None = None) -> list[str]:
    """The pod addresses this process uses (the host end of the veth has the first)."""
    hosts = list(subnet_for(os.getpid() if pid is None else pid).hosts())
    if count > len(hosts) - 1:
        raise ValueError(f"at most {len(hosts) - 1} pod addresses")
    return [str(ip) for ip in hosts[1 : count + 1]]


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


@dataclass
class PodNetwork:
    name: str
    subnet: ipaddress.IPv4Network
    addresses: list[str]

    def listen(self, address: str, port: int = 0) -> socket.socket:
        """A listening TCP socket on ``address:port`` inside the namespace."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/var/run/netns/{self.name}") as handle:
                    if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(128)
                sock.setblocking(False)
                made.append(sock)
            except BaseException as exc:  # reported in the caller's thread
                failed.append(exc)

        # This thread alone enters the namespace; it ends right after.
        thread = threading.Thread(target=inside, name=f"netns {self.name}")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return made[0]

    def delete(self) -> None:
        subprocess.run(
            ["ip", "link", "del", f"{self.name}h"], capture_output=True, check=False, timeout=10
        )
        subprocess.run(
            ["ip", "netns", "del", self.name], capture_output=True, check=False, timeout=10
        )


def create(count: int) -> PodNetwork:
    """A new namespace with ``count`` pod addresses; raises :class:`Unavailable`."""
    if os.geteuid() != 0:
        raise Unavailable("making a network namespace needs root (ip netns add)")
    if shutil.which("ip") is None:
        raise Unavailable("the ip command (iproute2) is not installed")
    pid = os.getpid()
    subnet = subnet_for(pid)
    in_use = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    for line in in_use.splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                try:
                    if ipaddress.ip_interface(word).network.overlaps(subnet):
                        raise Unavailable(f"{subnet} is already in use on this host")
                except ValueError:
                    continue
    name = f"crpod{pid}"
    host_end, *pods = (str(ip) for ip in list(subnet.hosts())[: count + 1])
    network = PodNetwork(name, subnet, pods)
    try:
        _ip("netns", "add", name)
        _ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}p", "netns", name)
        _ip("addr", "add", f"{host_end}/{subnet.prefixlen}", "dev", f"{name}h")
        _ip("link", "set", f"{name}h", "up")
        for address in pods:
            _ip("-n", name, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", f"{name}p")
        _ip("-n", name, "link", "set", f"{name}p", "up")
        _ip("-n", name, "link", "set", "lo", "up")
    except Unavailable:
        network.delete()
        raise
    return network


_shared: PodNetwork | Unavailable | None = None
_lock = threading.Lock()


def shared(count: int) -> PodNetwork:
    """This process's namespace, made on first use and deleted at exit."""
    global _shared
    with _lock:
        if _shared is None:
            try:
                _shared = create(count)
                atexit.register(_shared.delete)
            except Unavailable as exc:
                _shared = exc
        if isinstance(_shared, Unavailable):
            raise _shared
        return _shared
