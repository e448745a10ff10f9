"""Memory available to this process (host and container limits); torch-free, so that file readers
can refuse an image too large for memory before any heavy import."""

from __future__ import annotations

import os
from pathlib import Path

#: cgroup "no limit" values at or above this (v1 reports the largest page-aligned int64) count as none.
_CGROUP_UNLIMITED = 2**60


def _read_int(path) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroup_paths(proc_cgroup) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 memory-controller path) of this process from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        with open(proc_cgroup) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    v2 = parts[2]
                elif "memory" in parts[1].split(","):
                    v1 = parts[2]
    except OSError:
        pass
    return v2, v1


def cgroup_available_bytes(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> int | None:
    """Memory this process's container may still use: its cgroup's limit minus what the cgroup uses
    (less the inactive page cache, which the kernel reclaims before it kills), or None without a limit.

    cgroup v2: ``memory.max`` / ``memory.current`` / ``memory.stat`` (inactive_file); v1:
    ``memory/memory.limit_in_bytes`` / ``memory.usage_in_bytes`` / ``memory.stat`` (total_inactive_file).
    Looked up in the process's own cgroup (``proc_cgroup``) and at the mount's root (inside a
    container the two coincide); the smallest limit found counts. ``root`` and ``proc_cgroup`` are
    parameters so that tests can stand in a folder of their own."""
    root = Path(root)
    v2_path, v1_path = _own_cgroup_paths(proc_cgroup)
    candidates = []  # (limit file, usage file, stat file, inactive key)
    for rel in {"", (v2_path or "").lstrip("/")}:
        base = root / rel if rel else root
        candidates.append((base / "memory.max", base / "memory.current", base / "memory.stat", "inactive_file"))
    for rel in {"", (v1_path or "").lstrip("/")}:
        base = root / "memory" / rel if rel else root / "memory"
        candidates.append(
            (
                base / "memory.limit_in_bytes",
                base / "memory.usage_in_bytes",
                base / "memory.stat",
                "total_inactive_file",
            )
        )
    best = None
    for limit_file, usage_file, stat_file, key in candidates:
        limit = _read_int(limit_file)
        if limit is None or limit >= _CGROUP_UNLIMITED:
            continue
        usage = _read_int(usage_file) or 0
        free = max(0, limit - max(0, usage - _stat_value(stat_file, key)))
        best = free if best is None else min(best, free)
    return best


def host_available_bytes(meminfo="/proc/meminfo") -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None when unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes() -> int | None:
    """Memory available to this process: the host's (``host_available_bytes``) or, inside a
    container with a memory limit, the cgroup's (``cgroup_available_bytes``), whichever is smaller;
    None when neither is known."""
    known = [v for v in (host_available_bytes(), cgroup_available_bytes()) if v is not None]
    return min(known) if known else None
