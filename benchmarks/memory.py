"""Peak host memory of pretraining from the on-disk trial cache, against in memory, by population size.

Populations of 1x, 4x and 16x Kalunga2016 (all 11 subjects' trials, repeated
as new subjects) are written through the trial cache
(:mod:`eegtransfer.io.trialcache`) to a temporary folder: 1x by
``load_dataset("Kalunga2016", subjects, cache=...)`` (MOABB, preprocessed one
subject at a time), the others by repeating the 1x entry's subjects, one
subject in memory at a time. Then, in a fresh process per size and path,
``pretrain`` trains EEGNet for one epoch (validation split by subject, CPU, one
thread) either from the read-only ``np.memmap`` (streamed) or from the same
trials read into memory first (what ``load_dataset`` without a cache gives).

Each process reports its peak resident memory (``VmHWM`` of ``/proc/self/status``,
not ``ru_maxrss``, which Linux carries across ``exec``), the peaks of its anonymous and
file-backed parts (``RssAnon``, ``RssFile``, sampled every 10 ms), what it held
after its imports, and the seconds of the epoch. The writing processes report
the same.

Usage::

    MNE_DATA=/path/to/mne_data python benchmarks/memory.py                 # ~3-5 min on 2 busy cores
    python benchmarks/memory.py --sizes 1 4 --out /tmp/memory               # a smaller run

Results: ``OUT/memory.csv`` and ``OUT/memory.md`` (default ``benchmarks/results``).
The temporary data (about 200 MB at 16x) goes under ``--tmp`` (default ``/tmp``) and is
deleted at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUBJECTS = list(range(1, 12))
sys.path.insert(0, str(HERE.parent))  # this checkout's eegtransfer, in this process and its children


# --- measuring a process -------------------------------------------------------

def status() -> dict[str, float]:
    """``VmHWM``, ``VmRSS``, ``RssAnon`` and ``RssFile`` of this process, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / 1024
    return out


class Sampler:
    """The peaks of ``RssAnon`` and ``RssFile`` (``VmHWM`` is only the total's), sampled in a thread."""

    def __init__(self, every: float = 0.01) -> None:
        self.peak = status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self._update()

    def _update(self) -> None:
        for k, v in status().items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._update()
        return self.peak


# --- the child processes ---------------------------------------------------------

def repeated_spec(base_key: str, times: int, recipe: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "trials", "benchmark": "Kalunga2016 repeated", "base": base_key, "times": times,
            "recipe": recipe}


def child_write(root: Path, times: int) -> dict[str, Any]:
    """Write the population of ``times`` x Kalunga through the trial cache; peak memory while writing."""
    import numpy as np

    from eegtransfer.io import TrialCache, load_dataset
    from eegtransfer.io.moabb import default_recipe, get_dataset
    from eegtransfer.io.trialcache import trials_spec
    from eegtransfer.training.cache import cache_key
    from eegtransfer.training.streaming import DiskTrials

    after_imports = status()
    sampler = Sampler()
    t0 = time.perf_counter()
    cache = TrialCache(root)
    recipe = default_recipe(get_dataset("Kalunga2016"))
    base_key = cache_key(trials_spec(get_dataset("Kalunga2016"), SUBJECTS, recipe))
    if times == 1:
        X, meta, _ = load_dataset("Kalunga2016", SUBJECTS, recipe, cache=root)
        key = base_key
    else:
        Xb, mb, _ = cache.get(base_key)
        base = DiskTrials(Xb)  # read without mapping the file

        def chunks() -> Any:  # one subject at a time, as new subjects: 1 -> 101, 201, ...
            for r in range(times):
                for s in SUBJECTS:
                    rows = np.flatnonzero((mb["subject"] == str(s)).to_numpy())
                    meta = mb.iloc[rows].reset_index(drop=True)
                    meta["subject"] = str(s + 100 * r)
                    yield base[rows], meta

        X, meta, info, _ = cache.get_or_write(repeated_spec(base_key, times, recipe.to_dict()), chunks)
        key = info["key"]
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    return {"key": key, "times": times, "n_trials": len(X), "n_subjects": int(meta["subject"].nunique()),
            "data_mb": X.nbytes / 2**20, "seconds": seconds, "after_imports": after_imports, "peak": peak,
            "vmhwm": status()["VmHWM"]}


def child_train(root: Path, key: str, path: str) -> dict[str, Any]:
    """One epoch of ``pretrain`` (EEGNet) on the entry ``key``, streamed (``memmap``) or in ``memory``."""
    import numpy as np
    import torch

    from eegtransfer.io import TrialCache
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    torch.set_num_threads(1)
    after_imports = status()
    sampler = Sampler()
    X, meta, info = TrialCache(root).get(key)
    recipe = Recipe.from_dict(info["spec"]["recipe"])
    if path == "memory":
        X = np.array(X)  # what load_dataset without a cache returns: the trials in memory
    after_data = status()
    t0 = time.perf_counter()
    bundle = pretrain(X, meta["label"].to_numpy(), meta, recipe, model="EEGNet", epochs=1, device="cpu",
                      seed=0, verbose=False)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    epoch = bundle.history["epochs"][0]
    return {"key": key, "path": path, "n_trials": len(meta), "after_imports": after_imports,
            "after_data": after_data, "peak": peak, "vmhwm": status()["VmHWM"], "pretrain_seconds": seconds,
            "epoch_seconds": epoch["seconds"], "train_loss": epoch["train_loss"]}


def run_child(*args: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", *args], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"child {args} failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the run -------------------------------------------------------------------

def loadavg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16], help="population sizes, x Kalunga")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for memory.csv and memory.md")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the caches go")
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh processes per size and path (the table gives medians; default 3)")
    ap.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args._child:
        kind, root, *rest = args._child
        res = child_write(Path(root), int(rest[0])) if kind == "write" else child_train(Path(root), *rest)
        print(json.dumps(res))
        return 0

    base = Path(os.environ.get("MNE_DATA", HERE.parent.parent / "shared" / "data" / "mne_data"))
    if not (base / "MNE-ssvepexo-data").is_dir():
        print(f"the Kalunga2016 MOABB cache is not under {base}; set MNE_DATA", file=sys.stderr)
        return 2
    os.environ["MNE_DATA"] = str(base)
    sizes = sorted(set(args.sizes) | {1})
    load_start, t_start = loadavg(), time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="eegtransfer-memory-", dir=args.tmp))
    writes, trains = [], []
    try:
        for k in sizes:
            print(f"writing {k}x Kalunga ...", file=sys.stderr, flush=True)
            writes.append(run_child("write", str(root), str(k)))
        for w in writes:
            if w["times"] not in args.sizes:
                continue
            for r in range(args.repeats):  # interleaved, so that the load hits both paths alike
                for path in ("memmap", "memory"):
                    print(f"training {w['times']}x from {path} ({r + 1}/{args.repeats}) ...", file=sys.stderr,
                          flush=True)
                    trains.append({**run_child("train", str(root), w["key"], path), "times": w["times"],
                                   "data_mb": w["data_mb"], "repeat": r + 1})
        disk_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_results(args.out, writes, trains, {
        "argv": " ".join(sys.argv[1:]), "load_start": load_start, "load_end": loadavg(),
        "wall": time.perf_counter() - t_start, "disk_mb": disk_mb, "tmp": str(args.tmp), "repeats": args.repeats})
    return 0


def write_results(out: Path, writes: list[dict[str, Any]], trains: list[dict[str, Any]],
                  info: dict[str, Any]) -> None:
    import numpy as np
    import torch

    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for t in trains:
        runs.append({"population": f"{t['times']}x", "subjects": 11 * t["times"], "trials": t["n_trials"],
                     "data_mb": round(t["data_mb"], 1), "path": t["path"], "repeat": t["repeat"],
                     "peak_rss_mb": round(t["vmhwm"], 1), "peak_rss_anon_mb": round(t["peak"]["RssAnon"], 1),
                     "peak_rss_file_mb": round(t["peak"]["RssFile"], 1),
                     "rss_after_imports_mb": round(t["after_imports"]["VmRSS"], 1),
                     "rss_with_data_mb": round(t["after_data"]["VmRSS"], 1),
                     "epoch_s": round(t["epoch_seconds"], 2), "pretrain_s": round(t["pretrain_seconds"], 2),
                     "trials_per_s": round(t["n_trials"] / t["epoch_seconds"], 1)})
    rows = []  # the median of each column over the repeats of a size and path; the range of the peak
    for key in dict.fromkeys((r["population"], r["path"]) for r in runs):
        group = [r for r in runs if (r["population"], r["path"]) == key]
        row = {k: (round(statistics.median(r[k] for r in group), 2) if isinstance(v, float) else v)
               for k, v in group[0].items() if k != "repeat"}
        row["peak_rss_range"] = f"{min(r['peak_rss_mb'] for r in group):.0f}-{max(r['peak_rss_mb'] for r in group):.0f}"
        row["trials_per_s"] = round(row["trials"] / row["epoch_s"], 1)
        rows.append(row)
    wrows = [{"population": f"{w['times']}x", "subjects": w["n_subjects"], "trials": w["n_trials"],
              "data_mb": round(w["data_mb"], 1), "write_s": round(w["seconds"], 2),
              "peak_rss_mb": round(w["vmhwm"], 1), "peak_rss_anon_mb": round(w["peak"]["RssAnon"], 1),
              "rss_after_imports_mb": round(w["after_imports"]["VmRSS"], 1),
              "source": "MOABB, preprocessed" if w["times"] == 1 else "the 1x entry, repeated"} for w in writes]
    with open(out / "memory.csv", "w", newline="") as f:  # every run
        w = csv.DictWriter(f, fieldnames=list(runs[0]))
        w.writeheader()
        w.writerows(runs)
    with open(out / "memory_write.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(wrows[0]))
        w.writeheader()
        w.writerows(wrows)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# Peak host memory: pretraining from the on-disk trial cache (memmap) vs in memory",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; command: "
        f"`python benchmarks/memory.py {info['argv']}`; run took {info['wall']:.0f} s; temporary caches "
        f"({info['disk_mb']:.0f} MB) under {info['tmp']}, deleted.",
        f"- machine: {platform.processor() or platform.machine()}, {cores} CPU core(s), device cpu, one torch "
        f"thread per process; **shared machine**: load average (1/5/15 min, `os.getloadavg()`) "
        f"{info['load_start']} at the start, {info['load_end']} at the end: times move with the load, "
        "memory does not.",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}.",
        "- population: Kalunga2016 subjects 1-11 (default recipe: 8 channels x 512 samples at 128 Hz), repeated "
        "as new subjects (1 -> 101, 201, ...). Each row is a fresh process: `pretrain(X, ...)`, EEGNet, 1 epoch, "
        "batch 64, validation split by subject (20 %), the CCA expert fitted on all trials.",
        "- memmap: `X` is the trial cache's read-only `np.memmap` (`load_dataset(..., cache=...)`), streamed; "
        "in memory: the same trials read into RAM first (`np.array(X)`, what `load_dataset` returns without a "
        "cache).",
        "- peak RSS = `VmHWM` of the process (not `ru_maxrss`, which Linux carries over from the parent "
        "across `exec`); peak anon / file = peaks of `RssAnon` / `RssFile`, sampled every 10 ms (file-backed: "
        "mostly the shared libraries of torch); RSS with data = `VmRSS` once `X` is open (memmap) or read "
        f"(in memory). After the imports alone, each process held {min(r['rss_after_imports_mb'] for r in runs)}"
        f"-{max(r['rss_after_imports_mb'] for r in runs)} MB. s/epoch: the epoch with its validation pass.",
        f"- medians of {info['repeats']} fresh processes per row (interleaved memmap, memory, memmap, ...), "
        "with the range of the peak RSS; every run is in `memory.csv`.",
        "",
        "| population | subjects | trials | data MB | path | peak RSS MB (range) | peak anon MB | peak file MB | "
        "RSS with data MB | s/epoch | trials/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['population']} | {r['subjects']} | {r['trials']} | {r['data_mb']} | {r['path']} | "
                     f"{r['peak_rss_mb']:.0f} ({r['peak_rss_range']}) | {r['peak_rss_anon_mb']:.0f} | "
                     f"{r['peak_rss_file_mb']:.0f} | {r['rss_with_data_mb']:.0f} | {r['epoch_s']} | "
                     f"{r['trials_per_s']} |")
    lines += ["", "Writing the trial cache (fresh process each; the data goes to the file, one subject in memory):",
              "", "| population | subjects | trials | data MB | from | seconds | peak RSS MB | peak anon MB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in wrows:
        lines.append(f"| {r['population']} | {r['subjects']} | {r['trials']} | {r['data_mb']} | {r['source']} | "
                     f"{r['write_s']} | {r['peak_rss_mb']} | {r['peak_rss_anon_mb']} |")
    order = sorted({r["population"] for r in rows}, key=lambda p: int(p[:-1]))
    lines.append("")
    for path, name in (("memmap", "from the memmap"), ("memory", "in memory")):
        peak = {r["population"]: r["peak_rss_mb"] for r in rows if r["path"] == path}
        text = ", ".join(f"{p} {peak[p]:.0f}" for p in order if p in peak)
        steps = "; ".join(f"{a} -> {b}: {peak[b] - peak[a]:+.0f} MB"
                          for a, b in zip(order, order[1:]) if a in peak and b in peak)
        lines.append(f"- median peak RSS {name}: {text} MB ({steps}).")
    lines += ["", "Besides the model and its optimiser, the streamed path holds read-ahead buffers (3 training "
              "batches of 64 trials, 3 validation batches of 256) and one batch's activations, whatever the number "
              "of trials; at 1x the epoch is short (10 training batches: the allocator's caches are still filling) "
              "and the validation subjects have fewer trials than one validation batch, so that batch, and its "
              "activations, are smaller. The in-memory path holds the trials and, in `pretrain`, "
              "copies of the training and validation subjects' trials."]
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
