"""Rewrite the model table in README.md and docs/models.md from the registry (``attnmesh.registry.model_table``).

    python scripts/model_table.py           # rewrite both files in place
    python scripts/model_table.py --check   # exit 1 if either file's table differs from the registry's

The table sits between ``<!-- model-table -->`` and ``<!-- /model-table -->``; tests/test_docs.py fails when it
is out of date. Links to the model cards are written relative to each file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnmesh.registry import model_table  # noqa: E402

START, END = "<!-- model-table -->", "<!-- /model-table -->"
BLOCK = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.S)
FILES = {"README.md": "", "docs/models.md": "docs/"}  # file -> the folder its relative links start from


def table_for(prefix: str) -> str:
    """The registry's table with its repository-relative links made relative to a file in ``prefix``."""
    table = model_table()
    return table.replace("](" + prefix, "](") if prefix else table


def updated(text: str, prefix: str) -> str:
    """``text`` with its model-table block replaced; ValueError when it has no such block."""
    if not BLOCK.search(text):
        raise ValueError(f"no {START} ... {END} block")
    return BLOCK.sub(lambda _: f"{START}\n{table_for(prefix)}\n{END}", text, count=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a table is out of date")
    args = parser.parse_args()
    stale = []
    for name, prefix in FILES.items():
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        try:
            new = updated(text, prefix)
        except ValueError as e:
            print(f"model_table: error: {name}: {e}", file=sys.stderr)
            return 1
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"model_table: out of date: {', '.join(stale)} (run python scripts/model_table.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
