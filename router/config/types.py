"""Value types used across the configuration: durations, sizes, host:port pairs."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "M": 1024**2,
    "MiB": 1024**2,
    "G": 1024**3,
    "GiB": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Seconds as a number, or a string like ``250ms``, ``5s``, ``2m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use e.g. 250ms, 5s, 2m, 1h")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes as an integer, or a string like ``512KiB``, ``10MiB``, ``1GB``."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '10MiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(f"invalid size {value!r}: use e.g. 512KiB, 10MiB, 1GiB")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise ValueError("a size must be a number of bytes or a string like '10MiB'")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def parse_host_port(value: Any) -> str:
    """``HOST:PORT`` with an IPv4 address, a bracketed IPv6 address or a name."""
    if not isinstance(value, str):
        raise ValueError("expected 'HOST:PORT'")
    split_host_port(value)
    return value


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address {value!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(f"invalid address {value!r}: put IPv6 addresses in brackets")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value!r}")
    return host, int(port_text)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_RE.pattern},
            ],
            "description": "seconds, or a string such as 250ms, 5s, 2m",
        }
    ),
]

ByteCount = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _SIZE_RE.pattern},
            ],
            "description": "bytes, or a string such as 512KiB, 10MiB",
        }
    ),
]

HostPort = Annotated[
    str,
    BeforeValidator(parse_host_port),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "HOST:PORT, IPv6 in brackets"}),
]


def check_cidrs(value: list[str]) -> list[str]:
    """Validate a list of CIDRs (``10.0.0.0/8``, ``::1/128``, or a bare address)."""
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"invalid CIDR {cidr!r}") from None
    return value
