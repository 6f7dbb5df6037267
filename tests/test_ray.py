"""attnmesh on Ray (attnmesh.ray, ``--engine ray``): the tests of tests/ray_cases.py, run inside a loopback-only
network namespace.

Ray binds every network interface of the machine, so its tests never start it here: one pytest session runs
tests/ray_cases.py under ``unshare -n`` (only ``lo``, up; needs root, as on CI) and each test below reports
the outcome of the test of the same name there, with its failure message. Where such a namespace cannot be
made (not root), they are skipped, saying why.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from raytools import loopback_argv, loopback_env, loopback_problem

CASES = Path(__file__).with_name("ray_cases.py")
TIMEOUT_S = 900


def _case_names() -> list[str]:
    tree = ast.parse(CASES.read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """test name -> (passed / failed / skipped, message) from one run of tests/ray_cases.py in the namespace."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the test extra has it)")
    problem = loopback_problem()
    if problem is not None:
        pytest.skip(f"NOT RUN: the Ray tests need a loopback-only network namespace: {problem}")
    report = tmp_path_factory.mktemp("ray-cases") / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", str(CASES),
            f"--junitxml={report}", f"--basetemp={report.parent / 'tmp'}"]
    env = loopback_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.run(loopback_argv(argv), capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    if not report.exists():
        pytest.fail(f"tests/ray_cases.py did not run (exit code {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-4000:]}")
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        result = ("passed", "")
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                text = (node.get("message") or "") + "\n" + (node.text or "")
                result = ("skipped" if kind == "skipped" else "failed", text.strip())
        name = case.get("name", "")
        if name in out and out[name][0] == "failed":
            continue  # a fixture error after a failure: keep the failure
        out[name] = result
    out["__output__"] = ("", proc.stdout[-3000:])
    return out


def _proxy(name: str):
    def test(outcomes):
        if name not in outcomes:
            pytest.fail(f"{name} did not run in tests/ray_cases.py:\n{outcomes['__output__'][1]}")
        kind, message = outcomes[name]
        if kind == "skipped":
            pytest.skip(f"NOT RUN in the namespace: {message}")
        if kind == "failed":
            pytest.fail(f"in tests/ray_cases.py (loopback-only namespace):\n{message}", pytrace=False)

    test.__name__ = name
    test.__doc__ = f"tests/ray_cases.py::{name}, run inside a loopback-only network namespace."
    return test


for _name in _case_names():
    globals()[_name] = _proxy(_name)
