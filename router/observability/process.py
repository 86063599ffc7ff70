"""The standard ``process_*`` metrics (the names every Prometheus client library uses),
read from ``/proc`` when ``/metrics`` is asked for; absent where there is no ``/proc``."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from functools import cache

_PROC = "/proc/self"


@cache
def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def process_lines() -> Iterator[str]:
    try:
        with open(f"{_PROC}/stat", encoding="ascii") as file:
            # The command name (field 2) may hold spaces: split after its closing ')'.
            fields = file.read().rpartition(")")[2].split()
        open_fds = len(os.listdir(f"{_PROC}/fd"))
    except OSError:
        return
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    # fields[0] is field 3 of proc(5): utime is 14, stime 15, starttime 22, vsize 23, rss 24.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    start = _boot_time() + int(fields[19]) / ticks
    virtual = int(fields[20])
    resident = int(fields[21]) * page
    max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for name, kind, help_text, value in (
        ("process_cpu_seconds_total", "counter", "User and system CPU time.", cpu),
        ("process_resident_memory_bytes", "gauge", "Resident memory.", resident),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory.", virtual),
        ("process_start_time_seconds", "gauge", "Start time, Unix seconds.", start),
        ("process_open_fds", "gauge", "Open file descriptors.", open_fds),
        ("process_max_fds", "gauge", "Limit of open file descriptors.", max_fds),
    ):
        yield f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n"
