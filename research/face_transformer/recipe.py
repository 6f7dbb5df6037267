"""The stage recipe of a shipped face transformer (``recipe.toml`` beside this file), as data, and its runner::

    python -m research.face_transformer.recipe                 # the plan: one line per step
    python -m research.face_transformer.recipe --run stage4    # run steps by name (in recipe order)
    python -m research.face_transformer.recipe --run-all       # everything, cache to shipped weights

A recipe is a list of ``[[steps]]``, each ``run``-ning one research command: ``data`` (the teacher cache),
``composite`` / ``rotated`` / ``morphed`` / ``degraded`` (synthetic cache items), ``distill`` (a stage: its
``[steps.config]`` over the recipe's ``[defaults]``, read by :meth:`DistillConfig.from_table`), ``soup`` (weights
averaged) and ``ship`` (float16 weights and manifest entry, into ``dir`` or the package). :func:`load_recipe`
checks it whole before anything runs: every stage's settings (key by key, the one config reader
:func:`attnmesh.train.trainer.build_config`), unique names, and that every file a step reads is written by an
earlier step.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnmesh.train.trainer import ConfigError, read_config_file

from .distill import DistillConfig

RECIPE = Path(__file__).with_name("recipe.toml")
BUILDERS = ("composite", "rotated", "morphed", "degraded")
KINDS = ("data", *BUILDERS, "distill", "soup", "ship")
_KEYS = {"data": {"data", "out", "args"}, "distill": {"config", "refit_only", "keep_before_refit", "recorded_steps"},
         "soup": {"checkpoints", "out"}, "ship": {"checkpoint", "dir", "stages"},
         **{b: {"cache", "out", "train", "val", "seed"} for b in BUILDERS}}


@dataclass
class Step:
    """One step of a recipe; paths are absolute (resolved against the recipe's ``root``)."""

    name: str
    run: str
    settings: dict[str, Any]  # the step's table (paths resolved), without name / run / config
    config: DistillConfig | None = None  # distill steps
    reads: list[Path] = field(default_factory=list)  # files and folders it needs
    writes: list[Path] = field(default_factory=list)  # what it makes


@dataclass
class Recipe:
    model: str
    root: Path
    steps: list[Step]
    path: Path = RECIPE

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise ConfigError(f"no step named {name!r}; steps: {', '.join(s.name for s in self.steps)}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys on top; sub-tables merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_recipe(path: str | Path = RECIPE) -> Recipe:
    """The recipe at ``path``, checked whole (see the module doc); a :class:`ConfigError` names the step."""
    path = Path(path)
    raw = read_config_file(path)
    unknown = sorted(set(raw) - {"model", "root", "defaults", "steps"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    root = (path.parent / raw.get("root", ".")).resolve()
    defaults = raw.get("defaults", {})
    steps: list[Step] = []
    for i, table in enumerate(raw.get("steps", [])):
        name, kind = table.get("name"), table.get("run")
        where = f"{path.name} step {name or i + 1}"
        if not isinstance(name, str) or kind not in KINDS:
            raise ConfigError(f"{where}: needs a name and run = one of {', '.join(KINDS)}")
        if any(s.name == name for s in steps):
            raise ConfigError(f"{where}: a second step named {name!r}")
        rest = {k: v for k, v in table.items() if k not in ("name", "run")}
        extra = sorted(set(rest) - _KEYS[kind])
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} for run = {kind!r}")
        step = Step(name, kind, {})
        if kind == "distill":
            step.config = DistillConfig.from_table(_merge(defaults, rest.pop("config", {})), root, where)
            rest.setdefault("refit_only", False)
            rest.setdefault("keep_before_refit", "")
            out = Path(step.config.out)
            if rest["refit_only"]:
                step.reads = [Path(step.config.cache), out / "checkpoint.pt"]
            else:
                step.reads = [Path(step.config.cache)] + ([Path(step.config.init)] if step.config.init else [])
            step.writes = [out / "checkpoint.pt", out / "log.json"]
            if rest["keep_before_refit"]:
                step.writes.append(out / rest["keep_before_refit"])
        elif kind == "data":
            rest["data"] = str((root / rest.get("data", "../shared/data")).resolve())
            rest["out"] = str(root / rest["out"])
            step.writes = [Path(rest["out"])]
        elif kind in BUILDERS:
            rest["cache"], rest["out"] = str(root / rest["cache"]), str(root / rest["out"])
            step.reads, step.writes = [Path(rest["cache"])], [Path(rest["out"])]
        elif kind == "soup":
            rest["checkpoints"] = [str(root / p) for p in rest["checkpoints"]]
            rest["out"] = str(root / rest["out"])
            step.reads, step.writes = [Path(p) for p in rest["checkpoints"]], [Path(rest["out"])]
        else:  # ship
            rest["checkpoint"] = str(root / rest["checkpoint"])
            step.reads = [Path(rest["checkpoint"])]
            if "dir" in rest:
                rest["dir"] = str(root / rest["dir"])
                step.writes = [Path(rest["dir"]) / f"{raw.get('model', '')}.safetensors"]
            for s in rest.get("stages", []):
                if not any(p.name == s and p.run == "distill" for p in steps):
                    raise ConfigError(f"{where}: stages names {s!r}, which is no earlier distill step")
        step.settings = rest
        written = {w for p in steps for w in p.writes}
        missing = [str(r) for r in step.reads if r not in written]
        if missing:
            raise ConfigError(f"{where}: reads {', '.join(missing)}, which no earlier step writes")
        steps.append(step)
    return Recipe(str(raw.get("model", "")), root, steps, path)


def command(recipe: Recipe, step: Step) -> list[str]:
    """The command line of ``step`` (a distill step's is this runner's ``--run``: its settings live in the
    recipe, not in a file)."""
    s = step.settings
    if step.run == "distill":
        return ["python", "-m", "research.face_transformer.recipe", "--run", step.name]
    if step.run == "data":
        return ["python", "-m", "research.face_transformer.data", "--data", s["data"], "--out", s["out"],
                *s.get("args", [])]
    if step.run in BUILDERS:
        extra = ["--seed", str(s["seed"])] if "seed" in s else []
        return ["python", "-m", f"research.face_transformer.{step.run}", "--cache", s["cache"], "--out", s["out"],
                "--train", str(s["train"]), "--val", str(s["val"]), *extra]
    if step.run == "soup":
        return ["python", "-m", "research.face_transformer.soup", *s["checkpoints"], "--out", s["out"]]
    args = ["python", "-m", "research.face_transformer.ship", s["checkpoint"],
            "--recipe", _shown(recipe.path, recipe.root)]
    for name in s.get("stages", []):
        args += ["--steps", str(_steps_run(recipe.step(name))), "--stage", name]
    args += ["--minutes", f"{sum(_minutes_run(recipe.step(n)) for n in s.get('stages', [])):.0f}"]
    return args + (["--dir", s["dir"]] if "dir" in s else [])


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside it (as recorded in a manifest), else absolute."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def _log_summary(step: Step) -> dict[str, Any]:
    log = Path(step.config.out) / "log.json" if step.config else None
    return json.loads(log.read_text()).get("summary", {}) if log is not None and log.is_file() else {}


def _steps_run(step: Step) -> int:
    """Distillation steps of a stage: its run's log if it ran here (0 for a refit-only stage), else the shipped
    run's ``recorded_steps``."""
    if step.settings.get("refit_only"):
        return 0
    return int(_log_summary(step).get("steps", step.settings.get("recorded_steps", 0)))


def _minutes_run(step: Step) -> float:
    if step.settings.get("refit_only"):
        return 0.0
    summary = _log_summary(step)
    return summary["seconds"] / 60 if "seconds" in summary else step.config.minutes


def run_step(recipe: Recipe, step: Step) -> None:
    """Run ``step`` in this process (the modules' own ``main`` with the step's command line)."""
    import importlib

    if step.run == "distill":
        from .distill import run_stage

        Path(step.config.out).mkdir(parents=True, exist_ok=True)
        run_stage(step.config, step.settings["refit_only"], step.settings["keep_before_refit"],
                  log=lambda s: print(s, flush=True))
        return
    argv = command(recipe, step)[3:]
    if step.run == "ship" and "dir" in step.settings:
        Path(step.settings["dir"]).mkdir(parents=True, exist_ok=True)
    if step.run == "soup":
        Path(step.settings["out"]).parent.mkdir(parents=True, exist_ok=True)
    importlib.import_module(f"research.face_transformer.{step.run}").main(argv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.face_transformer.recipe", description=__doc__.split("::")[0])
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--run", nargs="+", metavar="STEP", default=[], help="run these steps (in recipe order)")
    p.add_argument("--run-all", action="store_true", help="run every step")
    a = p.parse_args(argv)
    try:
        recipe = load_recipe(a.recipe)
        chosen = recipe.steps if a.run_all else [recipe.step(n) for n in a.run]
    except (OSError, ValueError) as e:  # ConfigError, TOML syntax, a missing file
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not chosen:
        for s in recipe.steps:
            line = " ".join(command(recipe, s)).replace(f"{recipe.root}/", "")
            print(f"{s.name:15} {line}")
        return 0
    for s in sorted(chosen, key=recipe.steps.index):
        print(f"== {s.name}: {' '.join(command(recipe, s))}", file=sys.stderr, flush=True)
        run_step(recipe, s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
