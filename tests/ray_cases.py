"""The Ray tests proper, on local Ray clusters: run by tests/test_ray.py inside a loopback-only network namespace
(never collected on their own: the file name does not start with ``test_``).

Every result is compared with the local command's output on the same files (``attnmesh images/video --out
x.parquet``): the same paths, the same faces per input, landmarks within :data:`LANDMARK_TOL` pixels.

* ``ray.init(num_cpus=2)`` in this process: :class:`attnmesh.ray.FaceMeshPredictor` in ``map_batches`` (paths
  and bytes); ``attnmesh images --engine ray --address`` (rows, readers, a rerun writes nothing); a worker
  process killed mid-run (``os.kill``) and the job completing; a run interrupted by Ctrl-C, then resumed.
* ``ray.cluster_utils.Cluster`` with two 1-CPU nodes: the images and video commands with ``--workers 2`` (one
  worker per node, since each takes a CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from raytools import compare_rows, require_loopback_namespace
from reference import PHOTOS, VIDEOS

from attnmesh.io.outputs import parquet_schema

pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")
pq = pytest.importorskip("pyarrow.parquet")
pads = pytest.importorskip("pyarrow.dataset")
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")

LANDMARK_TOL = 1e-3  # pixels
GOOD = ["face-obama-240p.jpg", "face-two_people.jpg", "deepface-img3.jpg", "dlib-2008_002079.jpg"]
CLIPS = ["talking-d11.mp4", "multi-face-640x360.mp4"]
MAX_FRAMES = 6


def run_cli(*args: str | os.PathLike, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "attnmesh", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_cli(*args: str | os.PathLike) -> subprocess.Popen:
    """The command in a child process, with Ctrl-C's default disposition: a suite started in the background of
    a non-interactive shell (``cmd &``) inherits SIGINT ignored, and a child would then never see the signal."""
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    return subprocess.Popen([sys.executable, "-m", "attnmesh", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def assert_clean(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("attnmesh:")]


def shards(folder: Path) -> dict[str, tuple[int, int]]:
    """shard name -> (inode, mtime ns): a rewritten shard gets a new inode (temporary file renamed over)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("part-*.parquet"))}


def read_folder(folder: Path) -> pa.Table:
    return pads.dataset(str(folder), format="parquet").to_table()


def assert_same_rows(expected: pa.Table, got: pa.Table) -> dict:
    result = compare_rows(expected, got)
    assert result["mismatches"] == [], result
    assert result["paths_equal"] and result["faces_per_input_equal"], result
    assert result["rows"][0] == result["rows"][1] and result["faces"][0] == result["faces"][1] > 0, result
    assert result["max_landmark_diff"] <= LANDMARK_TOL, result
    return result


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    require_loopback_namespace()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A folder of four photos (1, 2 and more faces), one without a face and three bad files; the local
    command's Parquet output on it."""
    root = tmp_path_factory.mktemp("ray")
    folder = root / "photos"
    folder.mkdir()
    for name in GOOD:
        (folder / name).write_bytes((PHOTOS / name).read_bytes())
    assert cv2.imwrite(str(folder / "blank.png"), np.full((90, 120, 3), 128, np.uint8))
    data = (PHOTOS / GOOD[0]).read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "half.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.png").write_text("not a photo\n")
    local = root / "local.parquet"
    proc = run_cli("images", folder, "--out", local, "--batch-size", "3")
    assert proc.returncode == 1 and len(assert_clean(proc.stderr)) == 4, proc.stderr  # 3 errors + summary
    return {"root": root, "folder": folder, "local": local, "count": 8, "bad": 3}


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(num_cpus=2)``: this process is a driver; the commands join with ``--address``."""
    ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_predictor_in_map_batches_gives_the_rows_of_the_local_command(inputs, local_ray):
    from attnmesh.ray import FaceMeshPredictor

    paths = sorted(str(p) for p in inputs["folder"].iterdir())
    # every other file as bytes (its path then only names it), the others read by the workers from the path
    items = [{"path": p, "bytes": Path(p).read_bytes() if i % 2 else None} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items, override_num_blocks=2)
    faces = ds.map_batches(FaceMeshPredictor, fn_constructor_kwargs={"batch_size": 2}, batch_size=3,
                           compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
    out = pa.concat_tables(ray.get(faces.to_arrow_refs()))
    assert out.schema.equals(parquet_schema(478), check_metadata=False), out.schema
    result = assert_same_rows(pq.read_table(inputs["local"]), out)
    assert result["errors"] == (inputs["bad"], inputs["bad"])
    errors = {r["path"].rsplit("/", 1)[1]: r["error"] for r in out.to_pylist() if r["error"]}
    assert "empty" in errors["empty.jpg"] and "truncated" in errors["half.jpg"], errors
    assert "not an image" in errors["notes.png"], errors


def test_images_command_writes_the_local_rows_as_shards_and_a_rerun_writes_nothing(inputs, local_ray):
    out = inputs["root"] / "ray-out"
    args = ["images", inputs["folder"], "--out", out, "--engine", "ray", "--address", local_ray,
            "--shard-size", "3", "--workers", "2"]
    proc = run_cli(*args)
    lines = assert_clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr  # the bad files
    assert sum("attnmesh: error: " in line for line in lines) == inputs["bad"], lines
    assert lines[-1].startswith(f"attnmesh: {inputs['count']} images, "), lines
    assert lines[-1].endswith("(3 shards: 3 written now, 0 already there)"), lines
    first = shards(out)
    assert len(first) == 3 and not list(out.glob(".*")), sorted(out.iterdir())  # no temporaries left
    got = read_folder(out)
    assert got.schema.equals(parquet_schema(478)), got.schema  # with the schema's metadata
    assert_same_rows(pq.read_table(inputs["local"]), got)
    # the input order is kept across shards, as in the local output
    assert list(dict.fromkeys(got.column("path").to_pylist())) == list(
        dict.fromkeys(pq.read_table(inputs["local"]).column("path").to_pylist()))
    # pandas and Ray read the folder too
    assert len(__import__("pandas").read_parquet(out)) == len(got)
    assert ray.data.read_parquet(str(out)).count() == len(got)

    again = run_cli(*args)
    lines = assert_clean(again.stderr)
    assert again.returncode == 1 and lines[-1].endswith("(3 shards: 0 written now, 3 already there)"), lines
    assert sum("attnmesh: error: " in line for line in lines) == inputs["bad"], lines  # still reported
    assert shards(out) == first  # nothing rewritten

    other = run_cli(*args[:-4], "--shard-size", "4")  # other shards into the same folder: refused
    assert other.returncode == 1 and "shards of other inputs or options" in assert_clean(other.stderr)[-1]


def test_an_address_where_no_cluster_listens_is_one_line(inputs):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("images", inputs["folder"], "--out", inputs["root"] / "nowhere", "--engine", "ray",
                   "--address", f"127.0.0.1:{port}", timeout=60)
    lines = assert_clean(proc.stderr)
    assert proc.returncode == 1 and lines == [f"attnmesh: error: --address 127.0.0.1:{port}: no Ray cluster "
                                              "answers there (Connection refused); start one with 'ray start "
                                              "--head' or give the head node's address"], proc.stderr


def _actor_pids(marker: str) -> list[int]:
    """Processes whose command line (Ray's process title) names ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and cmdline.startswith("ray::"):
                pids.append(int(entry.name))
    return pids


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()[1]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_killed_worker_is_restarted_and_the_job_completes(inputs, local_ray):
    out = inputs["root"] / "killed"
    earlier = set(_actor_pids("_ImageShards"))  # workers of the runs before, if Ray has not ended them yet
    proc = start_cli("images", inputs["folder"], "--out", out, "--engine", "ray", "--address", local_ray,
                     "--shard-size", "1", "--workers", "1")
    _wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 1, proc)
    victims = sorted(set(_actor_pids("_ImageShards")) - earlier)
    assert len(victims) == 1, victims  # this run's one worker, busy with the next shards
    os.kill(victims[0], signal.SIGKILL)
    done_before = len(list(out.glob("part-*.parquet")))
    assert done_before < inputs["count"], "the run finished before the worker was killed"
    _, stderr = proc.communicate(timeout=300)
    lines = assert_clean(stderr)
    assert proc.returncode == 1 and lines[-1].endswith(f"({inputs['count']} shards: {inputs['count']} written now, "
                                                       "0 already there)"), stderr
    assert not Path(f"/proc/{victims[0]}").exists()
    assert_same_rows(pq.read_table(inputs["local"]), read_folder(out))


def test_an_interrupted_run_resumes_with_only_the_missing_shards(inputs):
    """Ctrl-C (SIGINT) to a run that started its own local Ray, after some shards; the rerun adds the others."""
    out = inputs["root"] / "resumed"
    args = ["images", inputs["folder"], "--out", out, "--engine", "ray", "--shard-size", "1", "--workers", "1"]
    proc = start_cli(*args)
    _wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 2, proc, timeout=180)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and assert_clean(stderr)[-1] == "attnmesh: error: interrupted", stderr
    kept = shards(out)
    assert 2 <= len(kept) < inputs["count"], kept
    again = run_cli(*args)
    lines = assert_clean(again.stderr)
    n = inputs["count"]
    assert lines[-1].endswith(f"({n} shards: {n - len(kept)} written now, {len(kept)} already there)"), lines
    final = shards(out)
    assert {k: final[k] for k in kept} == kept  # the shards of the first run were not redone
    assert_same_rows(pq.read_table(inputs["local"]), read_folder(out))


# -- two nodes ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes():
    """``ray.cluster_utils.Cluster``: a head and a second node, one CPU each."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def test_images_on_two_nodes(inputs, two_nodes):
    out = inputs["root"] / "two-nodes"
    proc = run_cli("images", inputs["folder"], "--out", out, "--engine", "ray", "--address", two_nodes,
                   "--workers", "2", "--shard-size", "4")
    lines = assert_clean(proc.stderr)
    assert proc.returncode == 1 and "2 Ray workers" in lines[0], proc.stderr
    assert_same_rows(pq.read_table(inputs["local"]), read_folder(out))
    too_many = run_cli("images", inputs["folder"], "--out", out.with_name("three"), "--engine", "ray",
                       "--workers", "3", env={"RAY_ADDRESS": two_nodes})  # the cluster named by the environment
    assert too_many.returncode == 2 and "has 2 CPUs" in assert_clean(too_many.stderr)[-1], too_many.stderr


def test_videos_one_task_each_on_two_nodes(inputs, two_nodes, tmp_path):
    clips = [VIDEOS / name for name in CLIPS]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    expected = []
    for clip in clips:
        local = tmp_path / f"{clip.stem}.parquet"
        proc = run_cli("video", clip, "--out", local, "--max-faces", "2", "--max-frames", MAX_FRAMES)
        assert proc.returncode == 0, proc.stderr
        expected.append(pq.read_table(local))
    out = tmp_path / "videos"
    # clips[0] twice: done once
    proc = run_cli("video", *clips, clips[0], bad, "--out", out, "--engine", "ray", "--address", two_nodes,
                   "--workers", "2", "--max-faces", "2", "--max-frames", MAX_FRAMES)
    lines = assert_clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert any(line.startswith(f"attnmesh: error: {bad}: not a video") for line in lines), lines
    assert lines[-1].startswith(f"attnmesh: 3 videos, {2 * MAX_FRAMES} frames, "), lines
    got = read_folder(out)
    rows = got.to_pylist()
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0]["path"] == str(bad) and errors[0]["frame"] is None, errors
    good = got.filter(pc.is_null(got.column("error")))
    assert_same_rows(pa.concat_tables(expected), good)
