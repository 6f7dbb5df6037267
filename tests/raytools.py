"""Helpers for the Ray tests and benchmarks: a loopback-only network namespace to run Ray in, and the comparison
of Ray's output rows with the local command's.

Ray binds the machine's other network interfaces even when told 127.0.0.1, so everything that starts Ray
(tests/ray_cases.py, benchmarks/ray_*.py) runs inside a network namespace that holds only the loopback
interface: ``unshare -n`` (needs root, as on CI), then ``ip link set lo up`` (done here from Python).
:func:`in_loopback_namespace` checks where we are; :func:`loopback_argv` is the command line that re-executes a
program there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import defaultdict
from typing import Any

import numpy as np

#: Set (to 1) in the environment of a process started by :func:`loopback_argv`.
NETNS_ENV = "ATTNMESH_LOOPBACK_NETNS"


def interfaces() -> list[str]:
    """The network interfaces of this process's network namespace (netlink, not /sys, which may show the
    namespace that mounted it)."""
    return sorted(name for _, name in socket.if_nameindex())


def in_loopback_namespace() -> bool:
    """Whether this process sees no network interface but ``lo``."""
    return interfaces() == ["lo"]


# What `ip link set lo up` does (SIOCGIFFLAGS / SIOCSIFFLAGS on a struct ifreq of 40 bytes), then exec argv:
# Python and unshare (util-linux) are all it needs, not iproute2.
_LO_UP = """import fcntl, os, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))
os.execvp(sys.argv[1], sys.argv[1:])"""


def loopback_argv(argv: list[str]) -> list[str]:
    """``argv`` run inside a new network namespace (``unshare -n``) with only the loopback interface, up."""
    return ["unshare", "-n", sys.executable, "-c", _LO_UP, *argv]


def loopback_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for :func:`loopback_argv`: Ray's token authentication off (nothing outside can reach
    the namespace) and :data:`NETNS_ENV` set."""
    out = dict(os.environ if env is None else env)
    out.update({"RAY_AUTH_MODE": "disabled", NETNS_ENV: "1"})
    return out


def loopback_problem() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "'unshare' (util-linux) is not installed"
    try:
        # a connection over loopback: "network is unreachable" while lo is down
        check = ("import socket; s = socket.create_server(('127.0.0.1', 0)); "
                 "socket.create_connection(s.getsockname(), 5)")
        proc = subprocess.run(loopback_argv([sys.executable, "-c", check]), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -n failed ({e})"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"a loopback-only namespace could not be made ({detail}; unshare -n needs root)"
    return None


def reexec_in_loopback_namespace() -> None:
    """Re-execute this program (``sys.argv``) inside a loopback-only namespace, unless it runs in one already;
    SystemExit with the reason when that cannot be done."""
    if in_loopback_namespace():
        return
    if os.environ.get(NETNS_ENV):
        raise SystemExit(f"started in a new network namespace, but it has the interfaces {interfaces()}")
    problem = loopback_problem()
    if problem:
        raise SystemExit(f"needs a loopback-only network namespace to run Ray: {problem}")
    os.execvpe("unshare", loopback_argv([sys.executable, *sys.argv]), loopback_env())


def require_loopback_namespace() -> None:
    """Raise RuntimeError unless this process is in a loopback-only namespace (call before starting Ray)."""
    if not in_loopback_namespace():
        raise RuntimeError(f"refusing to start Ray outside a loopback-only network namespace (interfaces: "
                           f"{', '.join(interfaces())}); run it through tests/raytools.loopback_argv")


# -- comparing outputs --------------------------------------------------------------------------------------

COLUMNS_EXACT = ("width", "height", "frame", "timestamp", "face", "track_id", "error")


def compare_rows(expected: Any, got: Any) -> dict[str, Any]:
    """Compare two tables of ``attnmesh images/video --out .parquet`` rows (pyarrow Tables), row by row
    matched on (path, frame, face). Returns ``paths`` (the two path lists' equality as sets), counts of
    rows, faces and errors of each, ``faces_per_input_equal``, ``max_landmark_diff`` (pixels, over the faces
    present in both), ``max_score_diff`` and ``mismatches`` (a few descriptions of rows or columns that
    differ otherwise)."""

    def index(table: Any) -> dict[tuple, dict]:
        out: dict[tuple, dict] = {}
        for row in table.to_pylist():
            key = (row["path"], row.get("frame"), row.get("face"), row.get("error"))
            if key in out:
                raise AssertionError(f"duplicate row {key[:3]}")
            out[key] = row
        return out

    a, b = index(expected), index(got)
    mismatches = []
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
        mismatches.append(f"rows only in expected: {only_a[:3]} ({len(only_a)}); only in got: {only_b[:3]} "
                          f"({len(only_b)})")
    faces: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key in a:
        faces[key[0]][0] += key[2] is not None
    for key in b:
        faces[key[0]][1] += key[2] is not None
    landmark_diff = score_diff = 0.0
    for key in sorted(set(a) & set(b), key=str):
        ra, rb = a[key], b[key]
        for column in COLUMNS_EXACT:
            if ra.get(column) != rb.get(column):
                mismatches.append(f"{key[:3]}: {column} {ra.get(column)!r} != {rb.get(column)!r}")
        if (ra["landmarks"] is None) != (rb["landmarks"] is None):
            mismatches.append(f"{key[:3]}: landmarks present in one only")
        elif ra["landmarks"] is not None:
            landmark_diff = max(landmark_diff, float(np.max(np.abs(np.subtract(ra["landmarks"], rb["landmarks"])))))
            score_diff = max(score_diff, abs(ra["score"] - rb["score"]))
    return {"paths_equal": {k[0] for k in a} == {k[0] for k in b}, "inputs": len({k[0] for k in a}),
            "rows": (len(a), len(b)), "faces": (sum(v[0] for v in faces.values()), sum(v[1] for v in faces.values())),
            "errors": (sum(k[3] is not None for k in a), sum(k[3] is not None for k in b)),
            "faces_per_input_equal": all(v[0] == v[1] for v in faces.values()),
            "max_landmark_diff": landmark_diff, "max_score_diff": score_diff, "mismatches": mismatches[:10]}
