"""Machine description for benchmark headers."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return (f"{platform.platform()}; {cpu}; {os.cpu_count()} logical CPUs{gpu}; python "
            f"{platform.python_version()}; load average {load:.1f} at start")
