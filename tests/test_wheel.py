"""The built wheel: every module and data file of ``src/attnmesh``, nothing that only reproduces our weights
(``research/``: distillation, cache builders, soups, recipes; no stage configs), and it imports without
``research/`` anywhere on the path. Built offline with the environment's setuptools (PEP 517 ``build_wheel``,
as ``pip wheel --no-build-isolation`` does), from a copy of the repository, so the source tree stays clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: research-only module names: none of them may be in the wheel under any path
RESEARCH_ONLY = {"distill", "composite", "degraded", "morphed", "rotated", "synthetic", "soup", "recipe",
                 "train_blendshape_net"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "repo"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    for name in ("src", "research", "configs"):  # research and configs present, as in a checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
    r = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; "
                        f"print(build_meta.build_wheel({str(tmp / 'dist')!r}))"],
                       cwd=src, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "dist" / r.stdout.strip().splitlines()[-1]


def test_wheel_holds_the_package_and_no_research_code(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    files = [n for n in names if ".dist-info/" not in n]
    assert files and all(n.startswith("attnmesh/") for n in files), sorted({n.split("/")[0] for n in files})
    # every module of the package ships ...
    source = ROOT / "src"
    modules = {p.relative_to(source).as_posix() for p in (source / "attnmesh").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules == {n for n in files if n.endswith(".py")}
    # ... with its weights, manifest and data files
    manifest = json.loads((source / "attnmesh" / "weights" / "manifest.json").read_text())
    for entry in manifest["models"].values():
        assert f"attnmesh/weights/{entry['file']}" in files, entry["file"]
    assert {"attnmesh/weights/manifest.json", "attnmesh/apps/blendshape_net.safetensors",
            "attnmesh/apps/blendshape_net.json"} <= set(files)
    # nothing research-only: no module of research/, no stage configs or recipes
    stems = {Path(n).stem for n in files if n.endswith(".py")}
    assert not stems & RESEARCH_ONLY, stems & RESEARCH_ONLY
    assert not [n for n in files if n.endswith((".toml", ".yaml", ".yml"))]
    research = [p.relative_to(ROOT / "research") for p in (ROOT / "research").rglob("*.py")]
    assert research, "research/ has no modules: the check below would prove nothing"
    for rel in research:
        for moved in (f"attnmesh/{rel.as_posix()}", f"attnmesh/transformer/{rel.name}"):
            assert rel.name == "__init__.py" or moved not in files, moved
    # and no shipped module imports research code
    with zipfile.ZipFile(wheel) as z:
        for n in files:
            if n.endswith(".py"):
                text = z.read(n).decode()
                assert not re.search(r"^\s*(from|import)\s+research\b", text, re.M), n


def test_wheel_imports_without_research(wheel: Path, tmp_path: Path) -> None:
    """Every module of the unpacked wheel imports with only the wheel on the path (no checkout, no research/);
    a module may lack an optional third-party dependency, but never research code."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = """
import sys
sys.path.insert(0, sys.argv[1])  # -I: no PYTHONPATH, no current folder, no user site: only the wheel
import importlib, pkgutil, attnmesh
assert attnmesh.__file__.startswith(sys.argv[1]), attnmesh.__file__
bad = []
for m in pkgutil.walk_packages(attnmesh.__path__, "attnmesh."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] in ("research", "attnmesh"):
            bad.append(f"{m.name}: {e}")
assert "research" not in sys.modules
print("\\n".join(bad))
"""
    r = subprocess.run([sys.executable, "-I", "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and not r.stdout.strip(), (r.stdout + r.stderr)[-3000:]
