"""The README and the docs site's pages: the README stays short, every relative link in them points to a file
that exists, the model tables match the registry, and the README's test command is the one CI runs. Cheap: no
mkdocs run (CI runs ``mkdocs build --strict``, which also checks anchors and docstrings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def link_targets(text: str) -> list[str]:
    """Targets of inline Markdown links and images, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's (and Python-Markdown's toc) anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    heading = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading).lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading).strip())


def broken_links(path: Path) -> list[str]:
    """The relative links of one Markdown file whose file (or, for '#anchor' links, heading) does not exist."""
    text = path.read_text(encoding="utf-8")
    bad = []
    for target in link_targets(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in {slug(h) for h in HEADING.findall(FENCE.sub("", text))}:
                bad.append(target)
            continue
        resolved = (path.parent / file_part.split("?")[0]).resolve()
        if not resolved.exists():
            bad.append(target)
    return bad


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/ (the limit is 200)"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Top `code` part\n[ok](there.md) [ok](there.md#x) ![img](missing.png) [gone](nope.md#a)\n"
                    "[anchor](#top-code-part) [bad anchor](#nowhere) [web](https://example.com/x.md)\n"
                    "`[in code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n", encoding="utf-8")
    assert broken_links(page) == ["missing.png", "nope.md#a", "#nowhere"]


def test_docs_pages_exist() -> None:
    for page in ["index.md", "python-api.md", "cli.md", "outputs.md", "architecture.md", "models.md", "parity.md",
                 "apps.md", "stable-landmarks.md", "speed.md", "cluster.md", "fine-tuning.md", "api.md",
                 "model_card_300w.md", "model_card_face_transformer.md", "research/face-transformer.md"]:
        assert (DOCS / page).is_file(), page
        assert f": {page}" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), f"{page} is not in mkdocs.yml's nav"


def test_model_tables_match_the_registry() -> None:
    spec = importlib.util.spec_from_file_location("model_table_script", ROOT / "scripts" / "model_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, prefix in script.FILES.items():
        text = (ROOT / name).read_text(encoding="utf-8")
        assert script.updated(text, prefix) == text, f"{name}: model table out of date; run python scripts/model_table.py"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3 -m venv"))
    steps = [step.strip() for step in command.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and "python3 -m venv .venv" in ci
    for step in steps[1:]:
        assert step.replace('"$(mktemp -d)"', "") in ci.replace('"$(mktemp -d)"', "").replace(
            " --quiet --disable-pip-version-check", ""), step
