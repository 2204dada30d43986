"""CPU accounting for the benchmarks: the whole machine's busy time, a server's (its session's) and the
bench process's own, in seconds — "other load" is what none of them used."""

from __future__ import annotations

import os

HZ = os.sysconf("SC_CLK_TCK")


def box_cpu() -> float:
    """Busy CPU seconds of the whole machine (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    return sum(int(v[i]) for i in (1, 2, 3, 6, 7, 8)) / HZ


def session_cpu(sid: int | None) -> float:
    """CPU seconds of the live processes of session `sid` (+ what its leader reaped from dead children)."""
    if not sid:
        return 0.0
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(v[3]) == sid:  # fields after ")": state ppid pgrp session ...
            total += int(v[11]) + int(v[12])
            if int(d) == sid:
                total += int(v[13]) + int(v[14])
    return total / HZ


def own_cpu() -> float:
    """CPU seconds of this process."""
    t = os.times()
    return t.user + t.system
