"""What this machine's CPU offers ONNX Runtime: the CPUs this process may use (affinity, cgroup quota) and the
instruction sets INT8 and BF16 speed depend on. Reads /proc and /sys only."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cpu_features", "default_intra_threads"]


def default_intra_threads() -> int:
    """What "0 intra-op threads" (ONNX Runtime's default) becomes here: ONNX Runtime's own choice (0) when the
    process may use every core, else the CPUs it may use (its default would count cores the quota forbids)."""
    cpus = available_cpus()
    return cpus if cpus < (os.cpu_count() or cpus) else 0


def available_cpus() -> int:
    """The CPUs this process may really use: its CPU affinity, capped by the cgroup CPU quota (a Kubernetes
    pod's CPU limit). ONNX Runtime's default thread count sees the machine's cores, not the quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_quota(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, or v1 cfs quota/period) of this process; None: no quota."""
    try:
        lines = Path(membership).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2: check the process's group and its parents
            group = Path(root) / rel
            for folder in [group, *group.parents]:
                if not str(folder).startswith(root):
                    break
                try:
                    quota_text, period_text = (folder / "cpu.max").read_text().split()[:2]
                except (OSError, ValueError):
                    continue
                if quota_text != "max" and float(period_text) > 0:
                    limits.append(float(quota_text) / float(period_text))
        elif "cpu" in controllers.split(","):
            for base in (Path(root) / "cpu,cpuacct", Path(root) / "cpu"):
                for folder in (base / rel, base):
                    try:
                        quota = float((folder / "cpu.cfs_quota_us").read_text())
                        period = float((folder / "cpu.cfs_period_us").read_text())
                    except (OSError, ValueError):
                        continue
                    if quota > 0 and period > 0:
                        limits.append(quota / period)
                    break
    return min(limits) if limits else None


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimddp", "i8mm")


def cpu_features() -> dict[str, object]:
    """The CPU model and the instruction sets INT8 and BF16 speed depend on (VNNI, AMX, ARM dot products)."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model or None, "isa": [f for f in _ISA if f in flags]}
