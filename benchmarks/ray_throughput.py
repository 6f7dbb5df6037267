"""Images per second of ``attnmesh images`` on one machine vs ``--engine ray`` with 1 and 2 workers, on
../shared/data/300w-train; what bounds it; a paper estimate for N machines.

    python benchmarks/ray_throughput.py [--images 2012] [--repeats 1]

Runs itself inside a loopback-only network namespace (``unshare -n``, needs root; Ray binds every interface
otherwise). Every run is the real command line in a subprocess, end to end (start-up, model loading, Ray and
its workers, writing the output). Steady rate: for the local engine (images - 1) / (wall - wall for one image);
for Ray, the images of the shards written after each worker's first one, over the time between. The local
engine runs with its default workers (one thread per CPU, each running the networks with one CPU thread) and
with ``--workers 1``; each Ray worker takes one CPU. Runs alternate between configurations across repeats, and
the load average is printed with each, because the machine is shared.

Stage costs (one thread, in this process, on the first 200 images): reading the file, decoding it
(attnmesh.io), the detector + mesh models (FaceMesh.process_batch, batches of 8), and building the records and
rows (face_record: rounding, head pose; outputs.rows).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))  # this checkout's attnmesh, also when another one is installed
from _machine import describe  # noqa: E402
from raytools import reexec_in_loopback_namespace  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "300w-train"
RUN_TIMEOUT_S = 600


def _cpu_times() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, user + system CPU seconds, command line) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry.name}/stat").read()
            cmdline = open(f"/proc/{entry.name}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, cmdline)
    return out


def _kind(cmdline: str) -> str:
    """What a process of a run is: a Ray worker running our code, the rest of Ray (GCS, raylet, idle workers,
    agents), or the driver / local command itself."""
    if cmdline.startswith("ray::") and ("Shards" in cmdline or "MapWorker" in cmdline):
        return "workers"
    if cmdline.startswith("ray::") or "ray" in cmdline.split(" ")[0] or "/ray/" in cmdline:
        return "ray"
    return "main"


def run(args: list[str], env: dict[str, str]) -> tuple[float, str, dict[str, float]]:
    """(wall seconds, last stderr line, CPU seconds by kind of process) of one command; the CPU time of the
    command's process tree is sampled every 0.2 s (a process that ends between samples loses under 0.2 s)."""
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "attnmesh", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    seen: dict[int, tuple[float, str]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            table = _cpu_times()
            tree = {proc.pid}
            grew = True
            while grew:
                grew = False
                for pid, (ppid, _, _) in table.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        grew = True
            for pid in tree & table.keys():
                seen[pid] = (table[pid][1], table[pid][2])
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        done.set()
        raise SystemExit(f"timed out after {RUN_TIMEOUT_S} s: attnmesh {' '.join(args[:1])}... "
                         f"({proc.communicate()[1][-2000:]})") from None
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed: attnmesh {' '.join(args)}\n{stderr[-3000:]}")
    cpu = {"workers": 0.0, "ray": 0.0, "main": 0.0}
    for seconds, cmdline in seen.values():
        cpu[_kind(cmdline)] += seconds
    return wall, stderr.strip().splitlines()[-1], cpu


def _chunks(paths: list[Path], size: int) -> list[list[Path]]:
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def stage_costs(paths: list[Path]) -> dict[str, float]:
    """Milliseconds per image of each stage, one thread."""
    import argparse as ap

    from attnmesh.cli import common
    from attnmesh.io import decode_image
    from attnmesh.io.outputs import face_record, rows

    args = ap.Namespace(max_faces=5, no_refine=False, min_detection_confidence=0.5, device="cpu", backend="auto",
                        model="attention", debug=False)
    fm = common.command_face_mesh(args, num_threads=1)
    t = time.perf_counter()
    blobs = [p.read_bytes() for p in paths]
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    images = [decode_image(b, str(p)) for b, p in zip(blobs, paths)]
    t_decode = time.perf_counter() - t
    fm.process_batch(images[:8])  # warm-up
    t = time.perf_counter()
    faces = []
    for s in range(0, len(images), 8):
        faces += fm.process_batch(images[s:s + 8])
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    n_rows = 0
    for im, fs in zip(images, faces):
        size = (im.shape[1], im.shape[0])
        record = {"path": "x", "width": size[0], "height": size[1], "faces": [face_record(f, size) for f in fs]}
        n_rows += len(list(rows(record)))
    t_rows = time.perf_counter() - t
    n = len(paths)
    return {"read": 1e3 * t_read / n, "decode": 1e3 * t_decode / n, "models": 1e3 * t_model / n,
            "records": 1e3 * t_rows / n, "bytes": sum(map(len, blobs)) / n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=None, help="first N images of 300w-train (default: all)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--shard-size", type=int, default=32, help="images per shard of the Ray runs (default: 32)")
    a = p.parse_args()
    reexec_in_loopback_namespace()

    from attnmesh.io import iter_image_paths

    paths = list(iter_image_paths([DATA]))[: a.images]
    print(describe())
    costs = stage_costs(paths[:200])
    with tempfile.TemporaryDirectory(prefix="attnmesh-ray-bench-") as tmp:
        lists = {}
        for name, chosen in (("all", paths), ("one", paths[:1])):
            lists[name] = Path(tmp, f"{name}.txt")
            lists[name].write_text("".join(f"{q}\n" for q in chosen))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                          os.environ.get("PYTHONPATH")]))}
        shard = str(a.shard_size)
        configs = {
            "local engine, default (--workers 2)": (env, ["--out", "{out}.parquet"]),
            "local engine, --workers 1": (env, ["--out", "{out}.parquet", "--workers", "1"]),
            "ray, 1 worker": (env, ["--out", "{out}", "--engine", "ray", "--workers", "1", "--shard-size", shard]),
            "ray, 2 workers": (env, ["--out", "{out}", "--engine", "ray", "--workers", "2", "--shard-size", shard]),
        }
        results: dict[str, list[dict]] = {k: [] for k in configs}
        n = len(paths)
        k = 0
        for _ in range(a.repeats):
            for name, (run_env, extra) in configs.items():
                got: dict = {}
                for which in ("one", "all"):
                    k += 1
                    # the local engine takes no list file: it gets the paths themselves
                    chosen = paths if which == "all" else paths[:1]
                    inputs = [str(q) for q in chosen] if "local" in name else [str(lists[which])]
                    args = ["images", *inputs, *[x.format(out=f"{tmp}/out{k}") for x in extra]]
                    load = os.getloadavg()[0]
                    wall, summary, cpu = run(args, run_env)
                    got[which] = {"wall": wall, "cpu": cpu, "load": load, "summary": summary}
                out = Path(f"{tmp}/out{k}" + (".parquet" if "local" in name else ""))
                got["out_bytes"] = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.glob("*"))
                if "local" in name:
                    got["steady"] = (n - 1) / max(got["all"]["wall"] - got["one"]["wall"], 1e-9)
                else:  # from the times the shards were written, once every worker has finished one
                    times = sorted(f.stat().st_mtime for f in out.glob("part-*.parquet"))
                    workers = int(extra[extra.index("--workers") + 1])
                    after = sum(len(c) for c in _chunks(paths, a.shard_size)[workers:])  # images done after
                    got["steady"] = after / max(times[-1] - times[workers - 1], 1e-9)
                results[name].append(got)
                cpu = got["all"]["cpu"]
                print(f"  {name}: {got['all']['wall']:.1f} s for {n} images, {got['one']['wall']:.1f} s for one; "
                      f"CPU s workers {cpu['workers']:.1f}, Ray {cpu['ray']:.1f}, main {cpu['main']:.1f}; load "
                      f"average {got['all']['load']:.1f}; output {got['out_bytes'] / n / 1e3:.1f} kB per image; "
                      f"{got['all']['summary']}", flush=True)

    cores = os.cpu_count() or 1
    print(f"\n{n} images of 300w-train ({costs['bytes'] / 1e3:.0f} kB each on average), {cores} CPUs, load average "
          f"at the end {os.getloadavg()[0]:.1f}. Steady: local engine (images - 1) / (wall - wall for one image); "
          f"Ray: the images of the shards written after each worker's first, over the time between (the shard "
          f"files' times). CPU: seconds "
          f"used by the run's processes: Ray workers / the rest of Ray (GCS, raylet, agents) / the command's own "
          f"process (the local engine's work, or Ray's driver); share = all of them / ({cores} cores x wall).\n")
    print("| run | wall s | one image s | images/s end to end | images/s steady | CPU s workers / Ray / main "
          "| CPU share | load avg |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    steady, best = {}, {}
    for name, runs in results.items():
        b = best[name] = min(runs, key=lambda r: r["all"]["wall"])  # the least disturbed repeat
        steady[name] = b["steady"]
        cpu = b["all"]["cpu"]
        share = sum(cpu.values()) / (cores * b["all"]["wall"])
        print(f"| {name} | {b['all']['wall']:.1f} | {b['one']['wall']:.1f} | {n / b['all']['wall']:.1f} | "
              f"{steady[name]:.1f} | {cpu['workers']:.1f} / {cpu['ray']:.1f} / {cpu['main']:.1f} | "
              f"{100 * share:.0f}% | {b['all']['load']:.1f} |")
    ratio = steady["ray, 2 workers"] / steady["ray, 1 worker"]
    print(f"\n2 workers / 1 worker, steady: {ratio:.2f}x; end to end: "
          f"{best['ray, 1 worker']['all']['wall'] / best['ray, 2 workers']['all']['wall']:.2f}x. Ray with 2 workers "
          f"/ the local engine (default workers), steady: "
          f"{steady['ray, 2 workers'] / steady['local engine, default (--workers 2)']:.2f}x")
    total = costs["read"] + costs["decode"] + costs["models"] + costs["records"]
    print("\nStage costs, one thread, ms per image: " + ", ".join(
        f"{key} {costs[key]:.2f} ({100 * costs[key] / total:.0f}%)" for key in ("read", "decode", "models", "records")))
    two = best["ray, 2 workers"]
    one = best["ray, 1 worker"]
    per_worker = steady["ray, 1 worker"]
    ray_cpu = two["all"]["cpu"]["ray"] + two["all"]["cpu"]["main"]
    machines, per = 10, 16
    rate = machines * per * per_worker
    print(f"\nPaper estimate. One worker (one core, alone) does {per_worker:.0f} images/s here in the steady state; "
          f"start-up (Ray, the workers, the models) takes {one['one']['wall']:.0f} s; Ray's own processes and the "
          f"driver used {ray_cpu:.1f} CPU s during the 2-worker run ({100 * ray_cpu / (cores * two['all']['wall']):.0f}"
          f"% of the machine). N machines of C cores, one worker per core, do about N x C x {per_worker:.0f} images/s "
          f"while nothing else limits them (one core per machine less for Ray's processes): e.g. {machines} x {per} "
          f"cores ~ {rate:,.0f} images/s, reading {rate * costs['bytes'] / 1e6:,.0f} MB/s of {costs['bytes'] / 1e3:.0f}"
          f" kB inputs and writing {rate * two['out_bytes'] / n / 1e6:,.0f} MB/s of shards; the driver gets one "
          f"summary row per shard ({rate / 256:,.0f}/s at 256 images per shard). Decoding grows with the image size "
          f"(these are crops of at most 384 px); the models' cost grows with the faces per image.")


if __name__ == "__main__":
    main()
