"""Do ``attnmesh images SRC... --out DIR --engine ray`` and ``attnmesh images SRC... --out x.parquet`` give the same
rows? The acceptance check of the Ray engine, on ../shared/data/photos and ../shared/data/300w-train by default.

    python benchmarks/ray_parity.py [SRC...] [--workers N] [--shard-size N]

Runs itself inside a loopback-only network namespace (``unshare -n``, needs root). Both commands run as
subprocesses from the repository root with the same SRC arguments; the rows are matched on (path, face) and
compared: the paths, the faces per input, every scalar column exactly, landmarks within 1e-3 px, the schema
(with its metadata) and the row order.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from raytools import compare_rows, reexec_in_loopback_namespace  # noqa: E402

TOLERANCE_PX = 1e-3


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("sources", nargs="*", default=["../shared/data/photos", "../shared/data/300w-train"])
    p.add_argument("--workers", default=None)
    p.add_argument("--shard-size", default=None)
    a = p.parse_args()
    reexec_in_loopback_namespace()

    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="attnmesh-ray-parity-") as tmp:
        local, folder = Path(tmp, "local.parquet"), Path(tmp, "ray")
        extra = [*(["--workers", a.workers] if a.workers else []), *(["--shard-size", a.shard_size] if a.shard_size
                                                                      else [])]
        for args in (["--out", str(local)], ["--out", str(folder), "--engine", "ray", *extra]):
            command = [sys.executable, "-m", "attnmesh", "images", *a.sources, *args]
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
            print(f"$ attnmesh images {' '.join(a.sources)} {' '.join(args)}  ({time.perf_counter() - start:.0f} s, "
                  f"exit {proc.returncode})\n  {proc.stderr.strip().splitlines()[-1]}")
        expected = pq.read_table(local)
        got = pads.dataset(str(folder), format="parquet").to_table()
        result = compare_rows(expected, got)
    same_order = expected.column("path").to_pylist() == got.column("path").to_pylist()
    same_schema = expected.schema.equals(got.schema, check_metadata=True)
    ok = (result["paths_equal"] and result["faces_per_input_equal"] and not result["mismatches"]
          and result["rows"][0] == result["rows"][1] and result["max_landmark_diff"] <= TOLERANCE_PX)
    print(f"\n| check | local | ray |\n|---|---:|---:|\n| inputs | {result['inputs']} | {result['inputs']} |\n"
          f"| rows | {result['rows'][0]} | {result['rows'][1]} |\n"
          f"| faces | {result['faces'][0]} | {result['faces'][1]} |\n"
          f"| failed inputs | {result['errors'][0]} | {result['errors'][1]} |\n")
    print(f"same paths: {result['paths_equal']}; same faces per input: {result['faces_per_input_equal']}; other "
          f"columns equal: {not result['mismatches']}; max landmark difference {result['max_landmark_diff']:.6f} px "
          f"(<= {TOLERANCE_PX}: {result['max_landmark_diff'] <= TOLERANCE_PX}); max score difference "
          f"{result['max_score_diff']:.6f}; same row order: {same_order}; same schema and metadata: {same_schema}")
    for line in result["mismatches"]:
        print("  mismatch:", line)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
