"""Speed of the eegtransfer engine against braindecode's ``EEGClassifier`` (skorch).

Side by side, in one run, with the same model, data, batch size, optimiser
(AdamW), learning rate and number of epochs:

* **pretraining**: seconds per epoch of four variants: ours (``engine.train``)
  eager and compiled (``compile=True``), and ``EEGClassifier.partial_fit``
  as braindecode ships it and "at its best" (skorch's ``compile=True``), with
  ``train_split=None`` (no validation in any), on Kalunga2016 (real, 8 ch x 512)
  and on a synthetic set shaped like BNCI2014_001 (2,592 trials of 22 ch x 1000
  samples at 250 Hz, 4 classes). Epochs of the four are interleaved (the order
  rotates each round) so that load from other users of the machine hits all
  alike; the median is reported, and the compile time of the first call apart.
* **head adaptation** of one calibration run (32 Kalunga trials), for every
  registered model: the whole ``adapt(..., strategy='head')`` call; for EEGNet and
  ShallowFBCSPNet also a raw ``engine.train`` on cached trunk features, vs skorch
  fine-tuning with ``Freezer`` on everything but ``final_layer``, for the same
  number of epochs.
* **peak memory** (``ru_maxrss`` of a fresh subprocess per measurement:
  imports, the full data set, model, and the first training batches).
* **start-up**: ``eegtransfer --help`` (median of 5) and, when it exists,
  ``eegtransfer calibrate`` on one Kalunga recording.

Usage::

    MNE_DATA=/path/to/mne_data python benchmarks/speed.py            # ~10 min on 2 busy cores
    python benchmarks/speed.py --quick --device cpu --out /tmp/speed  # a smoke run
    python benchmarks/speed.py --no-compile                          # without the compiled variants
    python benchmarks/speed.py --head-only --out /tmp/head           # head adaptation only (~15 s)

Results: ``OUT/speed.csv`` and ``OUT/speed.md`` (default ``benchmarks/results``).
Without the Kalunga2016 cache (``MNE_DATA``) the Kalunga rows are skipped.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = ("EEGNet", "ShallowFBCSPNet")
BNCI = {"n_trials": 2592, "n_chans": 22, "n_times": 1000, "sfreq": 250.0, "n_classes": 4}
TARGETS = {"pretrain_ratio": 2.0, "head_seconds": 0.3, "head_ratio": 10.0, "help_seconds": 1.0,
           "memory_mb": 3 * 1024}


# --- helpers -------------------------------------------------------------------

def kalunga_available() -> bool:
    base = Path(os.environ.get("MNE_DATA", REPO.parent / "shared" / "data" / "mne_data"))
    if (base / "MNE-ssvepexo-data").is_dir():
        os.environ["MNE_DATA"] = str(base)
        return True
    return False


def choose_threads(arg: str) -> int:
    """``auto``: every core we are given, or 1 when others already keep them busy.

    On an oversubscribed machine two OpenMP threads that spin-wait on each
    other can be tens of times slower than one (measured here: 670-1570 ms vs
    17-21 ms per EEGNet step at load 9 on 2 cores).
    """
    if arg != "auto":
        return max(1, int(arg))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if os.getloadavg()[0] > cores else cores


def synthetic_bnci(n_trials: int, seed: int = 0) -> tuple[Any, Any]:
    """Random trials shaped like BNCI2014_001 (float32), balanced labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_trials, BNCI["n_chans"], BNCI["n_times"]), dtype=np.float32)
    y = np.arange(n_trials) % BNCI["n_classes"]
    return X, y.astype(np.int64)


def load_kalunga() -> tuple[Any, Any, Any]:
    """Every Kalunga2016 subject in the local cache (no download)."""
    import re

    from eegtransfer.io import load_dataset

    folder = Path(os.environ["MNE_DATA"]) / "MNE-ssvepexo-data" / "zenodo" / "2392979"
    subjects = sorted({int(m.group(1)) for f in folder.glob("subject*_raw.fif")
                       if (m := re.match(r"subject(\d+)_run", f.name))})
    return load_dataset("Kalunga2016", subjects)


def build(name: str, shape: dict[str, Any], seed: int = 0) -> Any:
    import torch

    from eegtransfer.models import build_model

    torch.manual_seed(seed)
    return build_model(name, shape["n_chans"], shape["n_classes"], shape["n_times"], shape["sfreq"])


def skorch_classifier(module: Any, *, lr: float, batch_size: int, epochs: int, device: str,
                      callbacks: list | None = None, compile: bool = False, drop_last: bool = True) -> Any:
    """``EEGClassifier`` with AdamW and no validation split, otherwise braindecode's defaults
    (shuffled batches, ``drop_last=True``, its scoring callbacks); ``compile`` is skorch's."""
    import torch
    from braindecode import EEGClassifier

    return EEGClassifier(module, optimizer=torch.optim.AdamW, lr=lr, batch_size=batch_size,
                         max_epochs=epochs, train_split=None, callbacks=callbacks, device=device,
                         iterator_train__drop_last=drop_last, compile=compile, verbose=0)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loadavg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# --- measurements --------------------------------------------------------------

VARIANTS = ("ours eager", "ours compiled", "EEGClassifier default", "EEGClassifier compile=True")


def time_pretraining(name: str, shape: dict[str, Any], X: Any, y: Any, *, epochs: int, warmup_trials: int,
                     batch_size: int, lr: float, device: str, compile: bool = True) -> dict[str, Any]:
    """Median seconds per epoch of each variant, epochs interleaved (the order rotates each round).

    Variants: our engine eager and compiled (``train(compile=True)``), braindecode's
    ``EEGClassifier`` as it comes (its defaults: ``drop_last=True``, its scoring callbacks) and
    at its best (the same, with skorch's ``compile=True``). Each variant warms up on
    ``warmup_trials`` trials first; for the compiled ones that call compiles and is timed apart
    (``compile_s``). A call of ours times the whole ``train()`` call less its compiling pass
    (``History.compile_seconds``), which a run pays once. Dynamo's cache is reset first, so that
    each (data, model) pair compiles for its one input shape.
    """
    import torch

    from eegtransfer.training.engine import train

    if compile:
        torch._dynamo.reset()
    names = [v for v in VARIANTS if compile or "compile" not in v]
    kw = dict(batch_size=batch_size, lr=lr, patience=None, device=device)
    ours = {"ours eager": build(name, shape), "ours compiled": build(name, shape)}
    theirs = {"EEGClassifier default": skorch_classifier(build(name, shape), lr=lr, batch_size=batch_size,
                                                         epochs=1, device=device),
              "EEGClassifier compile=True": skorch_classifier(build(name, shape), lr=lr, batch_size=batch_size,
                                                              epochs=1, device=device, compile=True)}
    for clf in theirs.values():
        clf.initialize()
    compile_s: dict[str, float | None] = {}

    def one(variant: str, Xs: Any, ys: Any, seed: int) -> float:
        sync(device)
        t = time.perf_counter()
        if variant in ours:
            h = train(ours[variant], Xs, ys, epochs=1, seed=seed, compile=variant == "ours compiled", **kw)
            sync(device)
            elapsed = time.perf_counter() - t
            if variant == "ours compiled" and "ours compiled" not in compile_s:
                compile_s[variant] = h.compile_seconds  # None: it failed and ran eager
            return elapsed - (h.compile_seconds or 0.0)
        theirs[variant].partial_fit(Xs, ys, epochs=1)
        sync(device)
        return time.perf_counter() - t

    w = slice(0, min(len(y), warmup_trials))
    for v in names:
        t = time.perf_counter()
        one(v, X[w], y[w], 0)
        if v == "EEGClassifier compile=True":  # compiles inside its first partial_fit
            compile_s[v] = time.perf_counter() - t
    times: dict[str, list[float]] = {v: [] for v in names}
    load = []
    for r in range(epochs):
        order = names[r % len(names):] + names[:r % len(names)]
        for v in order:
            times[v].append(one(v, X, y, r))
        load.append(os.getloadavg()[0])
        print(f"  {name} epoch {r + 1}/{epochs}: " + ", ".join(f"{v} {times[v][-1]:.2f} s" for v in names)
              + f" (load {load[-1]:.1f})", file=sys.stderr, flush=True)
    return {"median": {v: statistics.median(t) for v, t in times.items()}, "all": times, "load": max(load),
            "compile_s": compile_s}


def time_head(bundle: Any, Xc: Any, labels: Any, *, epochs: int, repeats: int, device: str,
              detail: bool = True) -> dict[str, Any]:
    """Head-only adaptation of one calibration run: ours (adapt, raw engine) vs skorch Freezer.

    ``detail=False``: the ``adapt()`` call only.
    """
    import torch
    from skorch.callbacks import Freezer

    from eegtransfer.adaptation import adapt, chronological_split
    from eegtransfer.models import HEAD
    from eegtransfer.training.engine import head_inputs, train

    kw = dict(strategy="head", epochs=epochs, patience=epochs, device=device, seed=0)
    adapt(bundle, Xc, labels, **kw)  # warm-up
    t_adapt = []
    for _ in range(repeats):
        t = time.perf_counter()
        adapt(bundle, Xc, labels, **kw)
        t_adapt.append(time.perf_counter() - t)
    fit, _ = chronological_split(labels, 0.25)
    y = bundle.encode(labels)
    Xf, yf = bundle.prepare_input(Xc)[fit], y[fit]
    t_feat, t_raw = [], []
    for _ in range(repeats if detail else 0):
        model = copy.deepcopy(bundle.model)
        t = time.perf_counter()
        feats = head_inputs(model, Xf, HEAD, device=device)
        t_feat.append(time.perf_counter() - t)
        t = time.perf_counter()
        train(getattr(model, HEAD), feats, yf, epochs=epochs, batch_size=32, lr=1e-2, patience=None,
              device=device)
        t_raw.append(time.perf_counter() - t)
    t_skorch = []
    for _ in range(max(1, repeats // 2) if detail else 0):
        clf = skorch_classifier(copy.deepcopy(bundle.model), lr=1e-2, batch_size=32, epochs=epochs,
                                device=device, drop_last=False,  # 24 trials: one partial batch
                                callbacks=[("freeze", Freezer(lambda n: not n.startswith(HEAD + ".")))])
        t = time.perf_counter()
        clf.fit(Xf, torch.as_tensor(yf).numpy())
        t_skorch.append(time.perf_counter() - t)
    med = lambda t: statistics.median(t) if t else None  # noqa: E731
    return {"adapt": med(t_adapt), "features": med(t_feat), "raw": med(t_raw), "skorch": med(t_skorch),
            "n_fit": int(fit.sum()), "n_cal": len(labels)}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` from ``/proc/self/status`` where it exists: Linux keeps
    ``ru_maxrss`` across ``execve``, so a subprocess would report its parent's
    peak. Elsewhere ``ru_maxrss`` (KB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


class _Stop(Exception):
    """Raised from a forward hook to end a memory measurement after a few batches."""


def memory_child(framework: str, name: str, n_trials: int, batches: int, batch_size: int, device: str) -> None:
    """In a fresh process: peak RSS of training ``name`` on the BNCI-shaped set for ``batches`` batches."""
    import torch

    from eegtransfer.training.engine import train

    X, y = synthetic_bnci(n_trials)
    rss_data = peak_rss_mb()
    model = build(name, BNCI)
    seen = {"n": 0}

    def stop(module: Any, inputs: Any) -> None:
        seen["n"] += 1
        if seen["n"] > batches:
            raise _Stop

    model.register_forward_pre_hook(stop)
    try:
        if framework == "ours":
            train(model, X, y, epochs=1, batch_size=batch_size, lr=1e-3, patience=None, device=device)
        else:
            skorch_classifier(model, lr=1e-3, batch_size=batch_size, epochs=1, device=device).fit(X, y)
    except _Stop:
        pass
    out = {"maxrss_mb": peak_rss_mb(), "data_mb": rss_data,
           "batches": seen["n"] - 1}
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def measure_memory(framework: str, name: str, n_trials: int, batches: int, batch_size: int,
                   device: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory", framework, name, str(n_trials),
           str(batches), str(batch_size), "--device", device]
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        raise RuntimeError(f"memory child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def time_command(cmd: list[str], repeats: int) -> tuple[float, subprocess.CompletedProcess]:
    times, last = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        last = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        times.append(time.perf_counter() - t)
    return statistics.median(times), last


def eegtransfer_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("eegtransfer")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "eegtransfer.cli"]


def time_calibrate(help_text: str, repeats: int) -> tuple[float | None, str]:
    """Median wall time of ``eegtransfer calibrate`` on Kalunga subject 1 run 1, or (None, why)."""
    if "calibrate" not in help_text:
        return None, "not measured: `eegtransfer calibrate` does not exist"
    if not kalunga_available():
        return None, "not measured: Kalunga2016 cache absent"
    sys.path.insert(0, str(HERE))
    try:
        from calibrate_time import kalunga_folder, make_population
    except ImportError as err:
        return None, f"not measured: {err}"
    folder = kalunga_folder()
    rec = folder / "subject01_run1_raw.fif"
    with tempfile.TemporaryDirectory() as tmp:
        pop = make_population(folder, Path(tmp) / "pop", 2)
        times = []
        for i in range(repeats):
            cmd = [*eegtransfer_cmd(), "calibrate", "--model", str(pop), "--recording", str(rec),
                   "--minutes", "2", "--out", str(Path(tmp) / f"patient{i}"), "--quiet", "--device", "cpu"]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                return None, f"not measured: calibrate failed ({r.stderr.strip()[-300:]})"
    return statistics.median(times), f"median of {repeats}, `--minutes 2` on subject01_run1_raw.fif"


def profile_top(name: str, shape: dict[str, Any], X: Any, y: Any, batch_size: int, device: str,
                k: int = 5) -> list[str]:
    """Top-``k`` operators by self CPU time over 3 of our training steps."""
    import torch
    from torch.profiler import profile

    from eegtransfer.training.engine import train

    model = build(name, shape)
    n = min(len(y), 3 * batch_size)
    train(model, X[:batch_size], y[:batch_size], epochs=1, batch_size=batch_size, patience=None, device=device)
    with profile() as prof:
        train(model, X[:n], y[:n], epochs=1, batch_size=batch_size, patience=None, device=device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:k]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    del torch
    return [f"{e.key}: {e.self_cpu_time_total / 1e6:.2f} s self CPU ({100 * e.self_cpu_time_total / total:.0f} %)"
            for e in events]


# --- the run -------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (small BNCI set, 1 epoch)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for speed.csv and speed.md")
    ap.add_argument("--threads", default="auto",
                    help="torch CPU threads for both frameworks: a number, or auto (all cores, 1 when the "
                         "machine is already busy)")
    ap.add_argument("--epochs", type=int, default=None, help="timed Kalunga epochs (default 3; quick 1)")
    ap.add_argument("--bnci-epochs", type=int, default=None, help="timed BNCI-shaped epochs (default 1)")
    ap.add_argument("--bnci-trials", type=int, default=None, help="default 2592 (quick 256)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-epochs", type=int, default=None, help="head adaptation epochs (default 100)")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the compiled variants (ours compile=True, EEGClassifier compile=True)")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--pretrain-only", action="store_true",
                      help="measure pretraining only (no head adaptation, memory or start-up)")
    only.add_argument("--head-only", action="store_true",
                      help="measure head adaptation only (no pretraining epochs, memory or start-up)")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="keep torch's on-disk compile cache (default: a fresh one, so that compile times "
                         "are those of a first run)")
    ap.add_argument("--_memory", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    if args._memory:
        fw, name, n, b, bs = args._memory
        memory_child(fw, name, int(n), int(b), int(bs), args.device)
        return 0

    threads = choose_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch loads; engine.train reads it too
    cache_note = "torch's on-disk compile cache as found (warm: compile times shorter than a first run's)"
    if not args.warm_compile_cache:  # compile times of a first run: inductor's on-disk cache starts empty
        cache_tmp = tempfile.TemporaryDirectory(prefix="speed-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_tmp.name
        cache_note = ("a fresh, empty on-disk compile cache (`TORCHINDUCTOR_CACHE_DIR`), so our compile time "
                      "is a first run's; EEGClassifier compiles after ours in the same process and may reuse "
                      "its kernels")
    import logging

    import numpy as np
    import torch

    from eegtransfer.training.engine import resolve_device

    logging.getLogger("mne").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    device = str(resolve_device(args.device))
    quick = args.quick
    epochs = args.epochs or (1 if quick else 3)
    bnci_epochs = args.bnci_epochs or 1
    bnci_trials = args.bnci_trials or (256 if quick else BNCI["n_trials"])
    head_epochs = args.head_epochs or (30 if quick else 100)
    bs, lr = args.batch_size, args.lr
    load_start = loadavg()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    table: list[dict[str, Any]] = []  # pretraining, one line per (data, model)
    use_compile = not args.no_compile

    def info() -> dict[str, Any]:
        return {"device": device, "threads": threads, "load_start": load_start, "load_end": loadavg(),
                "wall": time.perf_counter() - t_start, "quick": quick, "argv": " ".join(sys.argv[1:]),
                "epochs": epochs, "bnci_epochs": bnci_epochs, "batch_size": bs, "lr": lr,
                "head_epochs": head_epochs, "torch": torch.__version__,
                "compile_cache": cache_note if use_compile else None}

    def row(bench: str, dataset: str, model: str, ours: float | None, theirs: float | None, unit: str,
            target: str = "", met: str = "", note: str = "") -> None:
        ratio = theirs / ours if ours and theirs else None
        rows.append({"benchmark": bench, "dataset": dataset, "model": model,
                     "ours": None if ours is None else round(ours, 4),
                     "braindecode_skorch": None if theirs is None else round(theirs, 4),
                     "ratio": None if ratio is None else round(ratio, 2), "unit": unit, "target": target,
                     "met": met, "note": note})

    # data
    sets: list[tuple[str, dict[str, Any], Any, Any, int]] = []
    kal = None
    if kalunga_available():
        print("loading Kalunga2016 ...", file=sys.stderr, flush=True)
        Xk, meta_k, recipe_k = load_kalunga()
        classes = sorted(set(meta_k["label"]))
        yk = np.searchsorted(classes, meta_k["label"].to_numpy()).astype(np.int64)
        shape_k = {"n_chans": Xk.shape[1], "n_times": Xk.shape[2], "sfreq": recipe_k.sfreq,
                   "n_classes": len(classes)}
        kal = (Xk, meta_k, recipe_k)
        sets.append((f"Kalunga2016 ({len(yk)} x {Xk.shape[1]} x {Xk.shape[2]})", shape_k, Xk, yk, epochs))
    else:
        notes.append("Kalunga2016 cache absent (set MNE_DATA): Kalunga rows skipped.")
    if not args.head_only:
        Xb, yb = synthetic_bnci(bnci_trials)
        sets.append((f"BNCI2014_001-shaped synthetic ({bnci_trials} x 22 x 1000)", BNCI, Xb, yb, bnci_epochs))

    # pretraining epochs: four variants, interleaved
    missed_pretrain: list[tuple[str, dict[str, Any], Any, Any]] = []
    if args.head_only:
        notes.append("--head-only: pretraining, memory and start-up not measured.")
    for label, shape, X, y, n_ep in sets if not args.head_only else []:
        for name in MODELS:
            print(f"pretraining {name} on {label}", file=sys.stderr, flush=True)
            r = time_pretraining(name, shape, X, y, epochs=n_ep, warmup_trials=2 * bs, batch_size=bs, lr=lr,
                                 device=device, compile=use_compile)
            med, cs = r["median"], r["compile_s"]
            e, d = med["ours eager"], med["EEGClassifier default"]
            ratio = d / e
            met = ratio >= TARGETS["pretrain_ratio"]
            if not met and device == "cpu":
                missed_pretrain.append((name, shape, X, y))
            per = (f"median of {n_ep}, interleaved; per epoch " + "; ".join(
                f"{v}: {', '.join(f'{t:.2f}' for t in ts)}" for v, ts in r["all"].items())
                + f"; max load {r['load']:.1f}")
            row("pretrain s/epoch, eager: ours vs EEGClassifier default", label, name, e, d, "s/epoch",
                ">= 2x faster (CPU)" if device == "cpu" else "", "yes" if met else
                f"no ({ratio:.2f}x; needs {TARGETS['pretrain_ratio'] / ratio:.1f}x more)", per)
            line = {"data": label, "model": name, **{v: med.get(v) for v in VARIANTS}}
            if use_compile:
                c, b = med["ours compiled"], med["EEGClassifier compile=True"]
                ours_c, theirs_c = cs.get("ours compiled"), cs.get("EEGClassifier compile=True")
                fell_back = ours_c is None
                row("pretrain s/epoch, compiled: ours compile=True vs EEGClassifier compile=True", label, name,
                    c, b, "s/epoch", note=("ours: torch.compile FAILED, ran eager; " if fell_back else "")
                    + f"compile speed-up: ours {e / c:.2f}x, EEGClassifier {d / b:.2f}x")
                best_o, best_t = min(e, c), min(d, b)
                row("pretrain s/epoch, each at its best", label, name, best_o, best_t, "s/epoch",
                    note=f"ours {'compiled' if c < e else 'eager'}, EEGClassifier "
                    f"{'compile=True' if b < d else 'default'}")
                row("compile time (first call)", label, name, ours_c, theirs_c, "s",
                    note="ours: History.compile_seconds (compile + one undone full batch); EEGClassifier: its "
                    f"first partial_fit on {min(len(y), 2 * bs)} trials, compile included")
                saved = e - c
                line.update({"ours compile s": ours_c, "EEGClassifier compile s": theirs_c,
                             "ours break-even epochs": (ours_c / saved) if ours_c and saved > 0 else None,
                             "best vs best": best_t / best_o})
            else:
                line["best vs best"] = d / e
            table.append(line)
            write(args.out, rows, notes, [], info(), table, quiet=True)  # a time limit still leaves these

    if args.pretrain_only:
        notes.append("--pretrain-only: head adaptation, memory and start-up not measured.")
        write(args.out, rows, notes, [], info(), table)
        return 0

    # head adaptation of one calibration run, every registered model
    if kal is not None:
        from eegtransfer.adaptation import select_calibration
        from eegtransfer.models import known_models
        from eegtransfer.training.pretraining import pretrain

        Xk, meta_k, recipe_k = kal
        subj = meta_k["subject"].astype(str).to_numpy()
        tgt = subj == "1"
        pop_subjects = sorted(set(subj[~tgt]), key=int)[:3]  # the head's time does not depend on them
        popm = np.isin(subj, pop_subjects)
        cal = select_calibration(meta_k[tgt], trials=32)
        Xc, lc = Xk[tgt][cal], meta_k["label"][tgt].to_numpy()[cal]
        repeats = 1 if quick else 3
        for name in known_models():
            print(f"head adaptation {name}", file=sys.stderr, flush=True)
            pop = pretrain(Xk[popm], meta_k["label"][popm].to_numpy(), meta_k[popm], recipe_k, model=name,
                           epochs=1, device=device, seed=0, compile=False)
            full = name in MODELS  # the others: adapt() only, against the target
            h = time_head(pop, Xc, lc, epochs=head_epochs, repeats=repeats, device=device, detail=full)
            lab = f"Kalunga2016 subject 1, first {h['n_cal']} trials ({h['n_fit']} fit)"
            met_s = h["adapt"] <= TARGETS["head_seconds"]
            verdict = "yes" if met_s else f"no: {h['adapt'] / TARGETS['head_seconds']:.1f}x over 0.3 s"
            if full:
                if h["skorch"] / h["adapt"] < TARGETS["head_ratio"]:
                    verdict += f"; ratio {h['skorch'] / h['adapt']:.1f}x < 10x"
                row("head adapt: adapt() vs Freezer", lab, name, h["adapt"], h["skorch"],
                    f"s ({head_epochs} epochs)", "<= 0.3 s and >= 10x", verdict)
                row("head adapt: engine.train on cached features vs Freezer", lab, name, h["raw"], h["skorch"],
                    f"s ({head_epochs} epochs)", note=f"trunk features once: {h['features']:.3f} s")
            else:
                row("head adapt: adapt()", lab, name, h["adapt"], None, f"s ({head_epochs} epochs)", "<= 0.3 s",
                    verdict, f"median of {repeats}; population pretrained 1 epoch on 3 subjects (the time does not "
                    "depend on them)")
    else:
        notes.append("head adaptation not measured: needs the Kalunga2016 cache.")
    if args.head_only:
        write(args.out, rows, notes, [], info(), table)
        return 0

    # peak memory, fresh process each
    mem_batches = 2 if quick else 3
    for name in MODELS:
        print(f"memory {name}", file=sys.stderr, flush=True)
        mo = measure_memory("ours", name, bnci_trials, mem_batches, bs, device)
        ms = measure_memory("skorch", name, bnci_trials, mem_batches, bs, device)
        ok = mo["maxrss_mb"] < TARGETS["memory_mb"]
        row("peak RSS, pretraining", f"BNCI2014_001-shaped synthetic ({bnci_trials} trials)", name,
            mo["maxrss_mb"], ms["maxrss_mb"], "MB", "< 3 GB (CPU)",
            "yes" if ok else f"no ({mo['maxrss_mb'] / 1024:.2f} GB)",
            f"fresh process, peak RSS (VmHWM) over imports + data + model + first {mem_batches} batches; "
            f"after imports + data: {mo['data_mb']:.0f} MB"
            + (f"; CUDA peak ours {mo['cuda_peak_mb']:.0f} MB, skorch {ms['cuda_peak_mb']:.0f} MB"
               if "cuda_peak_mb" in mo else ""))

    # start-up
    help_s, res = time_command([*eegtransfer_cmd(), "--help"], 5)
    row("start-up: eegtransfer --help", "", "", help_s, None, "s", "< 1 s",
        "yes" if help_s < TARGETS["help_seconds"] else f"no ({help_s / TARGETS['help_seconds']:.1f}x over)",
        "median of 5, fresh process")
    cal_s, why = time_calibrate(res.stdout, 1 if quick else 3)
    row("start-up: eegtransfer calibrate", "Kalunga2016 one recording", "EEGNet", cal_s, None, "s", note=why)

    # where the time goes, when pretraining is not 2x faster
    profiles: list[str] = []
    for name, shape, X, y in missed_pretrain[:2]:
        profiles.append(f"- {name}, {shape['n_chans']} x {shape['n_times']}, ours, 3 batches of {bs}:")
        profiles += [f"  - {line}" for line in profile_top(name, shape, X, y, bs, device)]

    write(args.out, rows, notes, profiles, info(), table)
    return 0


def write(out: Path, rows: list[dict[str, Any]], notes: list[str], profiles: list[str],
          info: dict[str, Any], table: list[dict[str, Any]] | None = None, quiet: bool = False) -> None:
    import braindecode
    import skorch

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = ""
    if info["device"].startswith("cuda"):
        import torch

        gpu = f", GPU {torch.cuda.get_device_name()}"
    fmt = lambda v: "" if v is None else f"{v:g}"  # noqa: E731
    lines = [
        "# Training speed: eegtransfer engine vs braindecode EEGClassifier (skorch)",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; command: "
        f"`python benchmarks/speed.py {info['argv']}`" + (" (quick smoke run)" if info["quick"] else ""),
        f"- machine: {platform.processor() or platform.machine()}, {cores} CPU core(s){gpu}; device "
        f"{info['device']}; torch threads {info['threads']} for both frameworks; "
        f"**shared machine**: load average (1/5/15 min, `os.getloadavg()`) {info['load_start']} at the start, "
        f"{info['load_end']} at the end. Absolute times move with the load; the ratios are from interleaved "
        "epochs and move less.",
        f"- torch {info['torch']}, braindecode {braindecode.__version__}, skorch {skorch.__version__}; "
        f"batch size {info['batch_size']}, AdamW lr {info['lr']:g}, no validation split in either; "
        f"timed epochs after a warm-up: Kalunga {info['epochs']}, BNCI-shaped {info['bnci_epochs']}; "
        f"head adaptation {info['head_epochs']} epochs (no early stop).",
        f"- ratio = braindecode/skorch value / ours (> 1: ours is faster or smaller). Run took "
        f"{info['wall']:.0f} s.",
        "- EEGClassifier runs as braindecode ships it (shuffled batches, `drop_last=True`: on the BNCI-shaped "
        "set it skips the last 32 of 2,592 trials per epoch, ours trains them; its accuracy scoring "
        "callback), with AdamW and `train_split=None`; \"compile=True\" is skorch's `torch.compile` of "
        "module and criterion. Ours compiled is `train(compile=True)`: full batches compiled, the last "
        "smaller one eager." + (f" Compile cache: {info['compile_cache']}." if info.get("compile_cache") else ""),
        *(_pretrain_table(table) if table else []),
        "",
        "| benchmark | data | model | ours | braindecode/skorch | ratio | unit | target | met | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([r["benchmark"], r["dataset"], r["model"], fmt(r["ours"]),
                                        fmt(r["braindecode_skorch"]), fmt(r["ratio"]), r["unit"], r["target"],
                                        r["met"], r["note"]]) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    if profiles:
        lines += ["", "## Where the time goes (pretraining target missed)", "",
                  "torch.profiler, top operators by self CPU time. The same braindecode layers run in both "
                  "frameworks, so time spent inside them cannot be saved by the training loop.", "", *profiles]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


def _pretrain_table(table: list[dict[str, Any]]) -> list[str]:
    """Pretraining seconds per epoch, one line per (data, model), every variant side by side."""
    cols = [c for c in (*VARIANTS, "ours compile s", "EEGClassifier compile s", "ours break-even epochs",
                        "best vs best") if any(t.get(c) is not None for t in table)]
    out = ["", "## Pretraining, seconds per epoch (medians of interleaved epochs)", "",
           "\"compile s\": the first call's compilation; \"break-even epochs\": our compile time / the "
           "seconds compiling saves per epoch; \"best vs best\": EEGClassifier's faster variant / ours "
           "(> 1: ours faster).", "",
           "| data | model | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for t in table:
        cells = [t["data"], t["model"]] + ["" if t.get(c) is None else f"{t[c]:.3g}" for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    sys.exit(main())
