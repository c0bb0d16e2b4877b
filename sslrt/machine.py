"""What this process may use of the machine it runs on (no sslrt imports: engines and the
pipeline alike read it)."""
from __future__ import annotations

import math
import os


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may run on (its affinity: taskset, a container's cpuset, a Ray
    actor's), not the machine's, and no more than its cgroup's CPU quota (a container limited to
    4 CPUs on a 64-core node: 4)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        cores = max(1, os.cpu_count() or 1)
    try:
        with open(cpu_max) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or no quota
        pass
    return cores
