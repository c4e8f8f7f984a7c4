"""Running the benchmark's configurations: each a real, resumable ``runner.run`` in its own child process.

A child (``python -m srsoup.bench.child JOB.json``) runs one configuration into its run dir and writes its figures
(peak RSS, threads, what it ran) to a sidecar JSON beside it, so its peak memory is its own; a configuration whose
run dir is complete with the same overrides is not run again. The in-process mode (tests, quick looks) runs them
all in this process and measures no memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from srsoup.bench.plan import RunDef, Settings, compose


def peak_rss_mb() -> float:
    """Peak RSS of this process's own address space (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's high-water mark across fork+exec into the child's ru_maxrss,
    so a child started by a large parent would report at least the parent's size.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def execute(job: dict) -> dict:
    """Run one configuration in this process and return its figures (the sidecar of the run dir)."""
    import torch

    from srsoup import runner

    rss_imports = peak_rss_mb()
    cfg = compose(job["overrides"])
    run_dir = Path(job["run_dir"])
    if job.get("profile"):
        return {"threads": torch.get_num_threads(), "profile": profile_run(cfg, run_dir, Path(job["profile"]))}
    before = read_summary(run_dir)
    done_before = set(before.get("groups", {})) if before.get("status") in ("complete", "partial") else set()
    runner.run(cfg, run_dir)
    ran_here = set(read_summary(run_dir).get("groups", {})) - done_before
    side = {"threads": torch.get_num_threads(), "groups_run_here": len(ran_here), "fresh": not done_before}
    if job.get("child"):
        side["peak_rss_mb"] = round(peak_rss_mb(), 1)
        side["rss_after_imports_mb"] = round(rss_imports, 1)
    return side


def child_main(job_path: str) -> int:
    """Entry of a child process: run the job, write its figures next to it, exit non-zero on failure."""
    job = json.loads(Path(job_path).read_text())
    # The run's INFO lines (budget fitted, resumed, each group committed) go to the child's log.
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    try:
        side = execute({**job, "child": True})
    except Exception as err:  # noqa: BLE001 - the parent reports it and goes on with the other runs
        import traceback

        traceback.print_exc()
        Path(job["sidecar"]).write_text(json.dumps({"error": f"{type(err).__name__}: {err}".splitlines()[0]}))
        return 1
    Path(job["sidecar"]).write_text(json.dumps({**side, "overrides": job["overrides"]}, indent=1))
    return 0


def launch(rd: RunDef, runs_dir: Path, in_process: bool, threads: int = 0, profile: Path | None = None) -> dict:
    """Run a configuration (child process unless ``in_process``); reuses the figures of a complete earlier run.

    ``threads`` > 0 sets the child's torch/OpenMP threads (0 keeps torch's default).
    """
    # A profile always runs afresh (a resumed, complete run would profile nothing).
    run_dir = runs_dir / (rd.name if profile is None else f"profile_{rd.name}_{int(time.time())}")
    sidecar = runs_dir / f"{run_dir.name}.bench.json"
    cached = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    complete = read_summary(run_dir).get("status") == "complete"
    if profile is None and complete and cached.get("overrides") == rd.overrides and not cached.get("error"):
        return {**cached, "cached": True}
    job = {
        "overrides": rd.overrides,
        "run_dir": str(run_dir),
        "sidecar": str(sidecar),
        "profile": str(profile) if profile else None,
        "threads": threads,
    }
    if in_process:
        return execute(job)
    job_path = runs_dir / f"{run_dir.name}.job.json"
    job_path.write_text(json.dumps(job, indent=1))
    return _spawn(job_path, sidecar, runs_dir / f"{run_dir.name}.log", threads)


def _spawn(job_path: Path, sidecar: Path, log_path: Path, threads: int) -> dict:
    """``python -m srsoup.bench.child JOB.json``, its output into ``log_path``; its sidecar, or why it failed."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "w") as log:
        cmd = [sys.executable, "-m", "srsoup.bench.child", str(job_path)]
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    side = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if code != 0:
        side.setdefault("error", f"child exited with {code}; see {log_path.name}")
    return side


def run_all(
    jobs: list[RunDef],
    runs_dir: Path,
    plans: dict,
    groups: int,
    in_process: bool,
    workers: int = 1,
    threads: int = 0,
) -> dict[str, dict]:
    """Run the configurations (``workers`` child processes at a time, the most expensive first); their sidecars."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def cost(rd: RunDef) -> int:
        return plans[rd.name]["denoiser_evals"] * (1 if rd.family == "memory" else groups)

    sides, start = {}, time.time()
    if in_process:
        for rd in jobs:
            sides[rd.name] = launch(rd, runs_dir, True)
            progress(rd.name, sides[rd.name], start)
        return sides
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(launch, rd, runs_dir, False, threads): rd for rd in sorted(jobs, key=cost)[::-1]}
        for fut in as_completed(futures):
            rd = futures[fut]
            sides[rd.name] = fut.result()
            progress(rd.name, sides[rd.name], start)
    return sides


def progress(name: str, side: dict, start: float) -> None:
    state = "cached" if side.get("cached") else ("error" if side.get("error") else "done")
    print(f"  {name:<32} {state:<7} t+{time.time() - start:6.0f} s  {side.get('error', '')}", flush=True)


def run_tag(s: Settings, prompts: list[str], seeds: list[int]) -> str:
    """Run dirs are keyed by the setting, its sizes, prompts and seeds, the model's weights and the user's
    overrides, so that other settings never resume them."""
    digest = hashlib.sha1()
    for f in _weight_files(s.overrides):
        digest.update(f.read_bytes())
    digest.update(json.dumps([s.overrides, prompts, seeds]).encode())
    return f"{s.name}_T{s.steps}_K{s.candidates}_p{s.prompts}_s{s.seeds}_{digest.hexdigest()[:8]}"


def _weight_files(overrides: list[str]) -> list[Path]:
    """The model's safetensors: in model.pretrained's folder, or the embedded weights (none for a hub id)."""
    from srsoup.tiny import WEIGHTS_DIR

    pretrained = compose(overrides).model.get("pretrained")
    folder = WEIGHTS_DIR if pretrained is None else Path(pretrained)
    return sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []


def _short_path(path: str) -> str:
    """A profiled file as the results show it: package-relative, never a path of this machine."""
    import sysconfig

    import srsoup

    root = str(Path(srsoup.__file__).resolve().parents[1]) + "/"
    path = path.split("site-packages/")[-1].replace(root, "")
    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    if path.startswith(stdlib):
        return "stdlib/" + path[len(stdlib) :]
    return path if not path.startswith("/") else "…/" + "/".join(path.split("/")[-2:])


def profile_run(cfg, run_dir: Path, out_txt: Path, top: int = 25) -> dict:
    """cProfile of a run: srsoup's functions by cumulative time and all functions by own time (file:line(name))."""
    import cProfile
    import io
    import pstats

    from srsoup import runner

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    runner.run(cfg, run_dir)
    prof.disable()
    seconds = time.perf_counter() - start
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(r"srsoup", top)
    stats.sort_stats("tottime").print_stats(top)
    out_txt.write_text(buf.getvalue())
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():
        short = _short_path(path)
        rows.append(
            {
                "where": f"{short}:{line}({func})",
                "calls": calls,
                "tottime": round(tottime, 3),
                "cumtime": round(cumtime, 3),
                "srsoup": short.startswith("srsoup/"),
            }
        )
    return {
        "seconds": seconds,
        "srsoup_cumulative": sorted((r for r in rows if r["srsoup"]), key=lambda r: -r["cumtime"])[:top],
        "own_time": sorted(rows, key=lambda r: -r["tottime"])[:top],
    }


def machine() -> dict:
    """The machine the benchmark ran on (CPU model, cores, RAM, torch)."""
    import torch

    return {
        "cpu": _proc_field("/proc/cpuinfo", "model name", lambda v: v, platform.processor()),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gib": _proc_field("/proc/meminfo", "MemTotal", lambda v: round(int(v.split()[0]) / 2**20, 1), None),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _proc_field(path: str, key: str, parse, default):
    """The first ``key: value`` line of a /proc file, parsed (``default`` where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return parse(line.split(":", 1)[1].strip())
    return default


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None
