"""A bundle: a trained model as a folder that anyone can open safely.

Layout::

    my-model/
        bundle.json          # model config, recipe, channels, classes, provenance
        weights.safetensors  # tensors only: opening it never runs code

Bundles are written atomically (into a hidden temporary folder beside the
target, flushed to disk, then renamed) and never replace an existing folder
unless asked. A writer killed half-way leaves either the complete old or the
complete new bundle: the next read or write of that path restores or cleans
up (see :func:`recover_dir`). Files and folders get the user's umask.

``bundle.json`` carries a SHA-256 of each of its fields (``checksums``), the
weights' among them, so an edit of the class order, channels, recipe or
event codes is refused by name instead of silently relabelling predictions.
These are checksums against accidental or careless edits, not signatures:
whoever rewrites a field and its checksum together is not stopped.

Reading ``bundle.json`` needs neither torch nor braindecode, so ``info`` is
fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BundleError, EEGTransferError
from .logs import verbose as verbose_decorator
from .preprocessing import Recipe

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd
    from torch import nn

    from .adaptation.report import AdaptationReport
    from .covariance import TangentSpaceExpert
    from .io.recordings import Recording
    from .ssvep import CCAExpert

logger = logging.getLogger("eegtransfer")

FORMAT = "eegtransfer.bundle"
FORMAT_VERSION = 4  # the newest this reads and writes
# Format 3 = format 2 plus the patient's tangent-space expert ("ts"). Only a bundle that has one is
# written as 3: a reader of format 2 would load it and silently predict without the expert, so it
# must refuse it instead; every other bundle stays readable by format-2 readers.
TS_FORMAT_VERSION = 3
# Format 4 = format 3 plus the CCA expert's say on rest ("rest_evidence"). Only a bundle whose expert
# keeps less than its full say is written as 4: an older reader would give it the full say silently.
REST_FORMAT_VERSION = 4
META_FILE = "bundle.json"
WEIGHTS_FILE = "weights.safetensors"
ALIGN_KEY = "__eegtransfer__.align"
CHECKSUMS_KEY = "checksums"
# Fields outside the checksums: the format marker (checked on its own) and the checksums themselves.
UNCHECKED = ("format", "format_version", CHECKSUMS_KEY)
_WARNED_UNPROTECTED: set[str] = set()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("eegtransfer", "torch", "braindecode", "mne", "moabb", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def field_checksum(value: Any) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no whitespace) of one ``bundle.json`` value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def meta_checksums(meta: dict[str, Any]) -> dict[str, str]:
    """Per-field checksums of ``meta``: every top-level field but those in :data:`UNCHECKED`.

    One digest per field (not one for all) so that a mismatch can name the field.
    """
    return {k: field_checksum(v) for k, v in meta.items() if k not in UNCHECKED}


def check_checksums(meta: dict[str, Any], mfile: Path) -> None:
    """Refuse metadata edited after writing, naming the first field whose checksum differs.

    A format-1 bundle has no checksums: it loads, with one warning per path.
    """
    stored = meta.get(CHECKSUMS_KEY)
    if meta.get("format_version") == 1 and stored is None:
        if str(mfile) not in _WARNED_UNPROTECTED:
            _WARNED_UNPROTECTED.add(str(mfile))
            logger.warning("%s: format 1 bundle: its metadata (classes, channels, recipe) is not "
                           "protected by checksums; save it again to protect it", mfile)
        return
    if not isinstance(stored, dict):
        raise BundleError(f"{mfile}: the '{CHECKSUMS_KEY}' field is missing or not an object; "
                          "refusing to load a bundle whose metadata cannot be checked")
    for key in [k for k in meta if k not in UNCHECKED] + sorted(set(stored) - set(meta)):
        if key not in stored:
            raise BundleError(f"{mfile}: field '{key}' was added after the bundle was written "
                              "(it has no checksum); refusing to load")
        if key not in meta:
            raise BundleError(f"{mfile}: field '{key}' was removed after the bundle was written; "
                              "refusing to load")
        if field_checksum(meta[key]) != stored[key]:
            raise BundleError(f"{mfile}: field '{key}' was changed after the bundle was written "
                              "(its checksum does not match); refusing to load")


class Bundle:
    """A braindecode model together with everything needed to use it.

    Parameters
    ----------
    model : torch.nn.Module
        A braindecode classifier built by :func:`eegtransfer.models.build_model`.
    model_name : str
    recipe : Recipe
        Preprocessing that produced the model's input.
    classes : list of str
        Class names, in the order of the model's outputs.
    model_kwargs : dict
        Hyper-parameters passed to the braindecode constructor.
    provenance : dict
        Dataset, subjects, seed, versions, timings, parent bundle.
    metrics : dict
        Scores measured when the bundle was made.
    adaptation : AdaptationReport | None
        For a patient bundle: what :func:`eegtransfer.adaptation.adapt` did and on which
        calibration data (:class:`eegtransfer.adaptation.AdaptationReport`).
    align : ndarray, shape (n_chans, n_chans) | None
        Euclidean-alignment matrix applied to trials before the model.
    cca : eegtransfer.ssvep.CCAExpert | None
        For SSVEP classes: canonical-correlation class probabilities multiplied with the
        network's (its ``weight`` and ``net_weight`` are their exponents; ``weight`` 0 keeps it
        as a prior for the ``cca`` step).
    ts : eegtransfer.covariance.TangentSpaceExpert | None
        The patient's own tangent-space classifier (the ``ts`` step), multiplied into the
        product with its exponent ``weight``.
    """

    def __init__(self, model: nn.Module, model_name: str, recipe: Recipe, classes: list[str],
                 *, model_kwargs: dict[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None,
                 adaptation: AdaptationReport | None = None,
                 align: np.ndarray | None = None,
                 history: dict[str, Any] | None = None,
                 cca: CCAExpert | None = None,
                 ts: TangentSpaceExpert | None = None) -> None:
        self.model = model
        self.model_name = model_name
        self.recipe = recipe
        self.classes = [str(c) for c in classes]
        self.model_kwargs = dict(model_kwargs or {})
        self.provenance = dict(provenance or {})
        self.metrics = dict(metrics or {})
        self.adaptation = adaptation
        self.align = None if align is None else np.asarray(align, dtype=np.float32)
        self.history = history or {}
        self.cca = cca
        self.ts = ts
        self.path: Path | None = None

    # --- use -----------------------------------------------------------------
    @property
    def ch_names(self) -> list[str]:
        return list(self.recipe.channels)

    @property
    def sfreq(self) -> float:
        return float(self.recipe.sfreq)

    def check_input(self, X: np.ndarray) -> np.ndarray:
        """``X`` as float32 after checking its shape is (n_trials, n_chans, n_times)."""
        X = np.asarray(X, dtype=np.float32)
        want = (len(self.ch_names), self.recipe.n_times)
        if X.ndim != 3 or X.shape[1:] != want:
            raise EEGTransferError(
                f"expected trials of shape (n_trials, {want[0]}, {want[1]}) for this bundle, got "
                f"{X.shape}; make them with bundle.recipe ({self.recipe.describe()}), or pass an "
                "mne.io.Raw or mne.Epochs"
            )
        return X

    def check_preprocessed(self, X: np.ndarray) -> np.ndarray:
        """``X`` checked for shape and for having gone through :attr:`recipe`.

        With ``standardize="trial"`` the recipe divides each channel of each
        trial by ``max(std, 1e-8)``, so every per-trial, per-channel standard
        deviation is at most 1 and is exactly 1 unless that window is flat.
        ``X`` is refused when one exceeds 1.001 or their median is below 0.99:
        data in volts (about 1e-5) or unscaled microvolts (about 10) fail, data
        made by the recipe cannot. Without standardisation, trials whose median
        deviation is below 1e-3 (volts where the recipe multiplies by
        ``scale``) are refused.

        Parameters
        ----------
        X : ndarray, shape (n_trials, n_chans, n_times)

        Returns
        -------
        X : ndarray of float32, same shape
        """
        X = self.check_input(X)
        if not len(X):
            return X
        sd = X.astype(np.float64).std(axis=-1)
        if self.recipe.standardize == "trial":
            bad = sd.max() > 1.001 or np.median(sd) < 0.99
            found = f"per-trial, per-channel standard deviations of {np.median(sd):.3g} (median)"
            want = "1 after the recipe's z-scoring"
        else:
            bad = self.recipe.scale != 1 and np.median(sd) < 1e-3
            found, want = f"a median standard deviation of {np.median(sd):.3g}", f"values x{self.recipe.scale:g}"
        if bad:
            raise EEGTransferError(
                f"X does not look preprocessed by this bundle's recipe: {found}, where {want} gives "
                f"{'1' if self.recipe.standardize == 'trial' else 'larger values'}; apply bundle.recipe "
                f"({self.recipe.describe()}) first, or pass an mne.io.Raw or mne.Epochs"
            )
        return X

    def prepare_input(self, X: np.ndarray) -> np.ndarray:
        """Check shape and apply the stored alignment: (n_trials, n_chans, n_times)."""
        X = self.check_input(X)
        if self.align is not None:
            from .adaptation.alignment import apply_alignment

            X = apply_alignment(X, self.align)
        return X

    @property
    def calibration(self) -> dict[str, Any]:
        """A patient bundle's calibration facts (files, interpolated channels, event ids); ``{}`` otherwise."""
        return dict(self.adaptation.calibration) if self.adaptation is not None else {}

    def trials(self, data: Any) -> Recording:
        """Cut an ``mne.io.Raw`` or ``mne.Epochs`` into trials with this bundle's recipe.

        The channels are mapped to the model's (renamed, reordered, extra ones
        dropped); the channels interpolated at calibration (a patient bundle)
        are interpolated again, exactly those; event ids named at calibration
        are reused. See :func:`eegtransfer.io.objects.trials_from_mne`.

        Returns
        -------
        recording : eegtransfer.io.Recording
            ``X`` of shape (n_trials, n_chans, n_times), ``meta`` (onset, label ...).
        """
        from .io.objects import trials_from_mne

        cal = self.calibration
        return trials_from_mne(data, self.recipe, classes=self.classes, event_id=cal.get("event_id"),
                               default_id=self.provenance.get("event_id"),
                               interpolate_missing=list(cal.get("interpolated") or []))

    def _as_trials(self, data: Any) -> np.ndarray:
        if isinstance(data, np.ndarray) or isinstance(data, (list, tuple)):
            return self.check_preprocessed(np.asarray(data))
        return self.trials(data).X

    def predict_proba(self, data: Any, *, device: str | None = None) -> np.ndarray:
        """Class probabilities, shape (n_trials, n_classes), columns in ``classes`` order.

        Parameters
        ----------
        data : mne.io.Raw | mne.Epochs | ndarray, shape (n_trials, n_chans, n_times)
            MNE objects go through :meth:`trials` (the stored recipe and channel
            mapping); an array must already have (:meth:`check_preprocessed`).
        device : str | None
            ``None`` predicts where the model is (see :meth:`load` and :meth:`to`).
        """
        from .training.engine import predict_logits

        X = self._as_trials(data)
        return self.proba_from_logits(predict_logits(self.model, self.prepare_input(X), device=device), X)

    def proba_from_logits(self, logits: Any, X: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` given the network's logits on the preprocessed trials ``X``.

        The experts, when there are, read ``X`` (before alignment).
        """
        import torch

        logits = torch.as_tensor(logits).detach().cpu()
        logp = torch.log_softmax(logits.double(), dim=1).numpy()
        if self.cca is not None and self.cca.weight > 0 and len(X):
            # A product of experts: the network's probabilities times the CCA expert's, each
            # raised to its exponent (the network's tempers its overconfidence).
            logp = self.cca.net_weight * logp + self.cca.weight * self.cca.log_proba(X)
        if self.ts is not None and self.ts.weight > 0 and len(X):
            logp = logp + self.ts.weight * self.ts.log_proba(X)
        return torch.softmax(torch.as_tensor(logp), dim=1).numpy().astype(np.float32)

    def predict(self, data: Any, *, device: str | None = None) -> np.ndarray:
        """Predicted class names, shape (n_trials,); ``data`` as in :meth:`predict_proba`."""
        proba = self.predict_proba(data, device=device)
        return np.asarray(self.classes, dtype=object)[proba.argmax(1)]

    def predict_frame(self, data: Any, *, device: str | None = None) -> pd.DataFrame:
        """One row per trial of an ``mne.io.Raw`` or ``mne.Epochs``, as a tidy table.

        Returns
        -------
        frame : pandas.DataFrame, shape (n_trials, 2 + n_classes [+ 1])
            ``onset`` (seconds from the start of the recording; for Epochs the
            event sample over the sampling rate), ``label`` (the true class,
            only when the data name it), ``predicted``, and ``p_<class>`` per class.
        """
        import pandas as pd

        rec = self.trials(data)
        proba = self.predict_proba(rec.X, device=device)
        df = pd.DataFrame({"onset": rec.meta["onset"].astype(float).round(4).to_numpy()})
        labels = rec.meta["label"].astype(str).to_numpy()
        if (labels != "").any():
            df["label"] = labels
        df["predicted"] = np.asarray(self.classes, dtype=object)[proba.argmax(1)]
        for i, c in enumerate(self.classes):
            df[f"p_{c}"] = proba[:, i]
        return df

    def predict_annotations(self, raw: Any, *, device: str | None = None) -> mne.Annotations:
        """Predictions as ``mne.Annotations`` to overlay with ``raw.set_annotations`` and ``raw.plot()``.

        Each trial's window ``[onset + tmin, onset + tmax)`` becomes one
        annotation described ``"pred/<class> (p=0.87)"``.
        """
        import mne

        df = self.predict_frame(raw, device=device)
        p = df[[f"p_{c}" for c in self.classes]].to_numpy().max(axis=1)
        desc = [f"pred/{c} (p={q:.2f})" for c, q in zip(df["predicted"], p)]
        return mne.Annotations(onset=df["onset"].to_numpy() + self.recipe.tmin,
                               duration=np.full(len(df), self.recipe.tmax - self.recipe.tmin),
                               description=desc, orig_time=raw.annotations.orig_time)

    def encode(self, labels: Any, *, source: str = "labels") -> np.ndarray:
        """Class names to output indices; unknown names are an error that lists them."""
        index = {c: i for i, c in enumerate(self.classes)}
        labels = [str(v) for v in np.asarray(labels).ravel()]
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise EEGTransferError(f"{source}: label(s) {unknown} are not classes of the model {self.classes}")
        return np.array([index[v] for v in labels], dtype=np.int64)

    def to(self, device: str) -> Bundle:
        """Move the model to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``...), in place; return self."""
        from .training.engine import resolve_device

        self.model.to(resolve_device(device))
        return self

    def copy(self) -> Bundle:
        import copy

        new = copy.copy(self)
        new.model = copy.deepcopy(self.model)
        new.provenance = copy.deepcopy(self.provenance)
        new.metrics = copy.deepcopy(self.metrics)
        new.adaptation = copy.deepcopy(self.adaptation)
        new.cca = copy.deepcopy(self.cca)
        new.ts = copy.deepcopy(self.ts)
        new.recipe = Recipe.from_dict(self.recipe.to_dict())
        new.path = None
        return new

    # --- disk ----------------------------------------------------------------
    def _format_version(self) -> int:
        """The oldest format that holds everything this bundle predicts with (see ``FORMAT_VERSION``)."""
        if self.cca is not None and self.cca.rest_evidence != 1.0:
            return REST_FORMAT_VERSION
        return TS_FORMAT_VERSION if self.ts is not None else 2

    def to_meta(self) -> dict[str, Any]:
        config = None
        if hasattr(self.model, "get_config"):
            try:
                config = _jsonable(self.model.get_config())
            except Exception:  # a model whose config cannot be serialised still saves
                config = None
        return {
            "format": FORMAT,
            "format_version": self._format_version(),
            "model": {
                "name": self.model_name,
                "n_chans": len(self.ch_names),
                "n_outputs": len(self.classes),
                "n_times": self.recipe.n_times,
                "sfreq": self.sfreq,
                "kwargs": _jsonable(self.model_kwargs),
                "braindecode_config": config,
            },
            "recipe": self.recipe.to_dict(),
            "ch_names": self.ch_names,
            "sfreq": self.sfreq,
            "classes": self.classes,
            "provenance": _jsonable(self.provenance),
            "metrics": _jsonable(self.metrics),
            "adaptation": _jsonable(self.adaptation.to_dict() if hasattr(self.adaptation, "to_dict")
                                    else self.adaptation),
            "history": _jsonable(self.history),
            "cca": None if self.cca is None else _jsonable(self.cca.to_dict()),
            "ts": None if self.ts is None else _jsonable(self.ts.to_dict()),
        }

    @verbose_decorator
    def save(self, path: str | Path, *, overwrite: bool = False,
             protect: list[str | Path] | None = None,
             extra_files: dict[str, str] | None = None,
             verbose: bool | str | int | None = None) -> Path:
        """Write the bundle folder atomically; refuse to replace one unless ``overwrite``.

        ``protect`` lists folders (input bundles) that the output may not be,
        contain or sit inside. ``extra_files`` (name to text) are written into
        the folder in the same atomic step (the cache's specification). The
        parent folder must exist: saving never creates folders. ``verbose``
        sets the log level for the call, as in MNE.
        """
        from safetensors.torch import save as save_tensors

        path = Path(path)
        meta = self.to_meta()

        def write(tmp: Path) -> None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            if self.align is not None:
                import torch

                tensors[ALIGN_KEY] = torch.as_tensor(self.align)
            # Bytes written by us (open() applies the umask); safetensors' save_file makes 0o600 files.
            (tmp / WEIGHTS_FILE).write_bytes(save_tensors(tensors, metadata={"format": FORMAT}))
            meta["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE)}
            # Checksums of the values as they will be read back (tuples become lists).
            full = _jsonable(meta)
            full[CHECKSUMS_KEY] = meta_checksums(full)
            (tmp / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=False))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)

        write_dir_atomic(path, write, overwrite=overwrite, protect=[Path(p) for p in protect or []])
        self.path = path
        return path

    @classmethod
    @verbose_decorator
    def load(cls, path: str | Path, *, device: str = "cpu",
             verbose: bool | str | int | None = None) -> Bundle:
        """Read and check a bundle folder; every inconsistency is named.

        ``verbose`` sets the log level for the call, as in MNE.
        """
        from safetensors.torch import load_file

        from .adaptation.report import AdaptationReport
        from .covariance import TangentSpaceExpert
        from .models import build_model
        from .ssvep import CCAExpert

        path = Path(path)
        meta = verify_weights(path)
        wfile = path / meta["weights"]["file"]
        m = meta["model"]
        recipe = Recipe.from_dict(meta["recipe"])
        tensors = load_file(str(wfile), device="cpu")
        align = tensors.pop(ALIGN_KEY, None)
        model = build_model(m["name"], m["n_chans"], m["n_outputs"], m["n_times"], m["sfreq"],
                            ch_names=meta["ch_names"], **m.get("kwargs", {}))
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise BundleError(f"{wfile}: weights do not fit {m['name']} as configured: "
                              f"{str(err).splitlines()[0]}") from None
        from .training.engine import resolve_device

        model.to(resolve_device(device)).eval()
        b = cls(model, m["name"], recipe, meta["classes"], model_kwargs=m.get("kwargs"),
                provenance=meta.get("provenance"), metrics=meta.get("metrics"),
                adaptation=AdaptationReport.from_dict(meta.get("adaptation")),
                align=None if align is None else align.numpy(),
                history=meta.get("history"), cca=CCAExpert.from_dict(meta.get("cca")),
                ts=TangentSpaceExpert.from_dict(meta.get("ts")))
        b.path = path
        return b

    # --- display -------------------------------------------------------------
    def summary(self) -> str:
        return summarize(self.to_meta() if self.path is None else read_meta(self.path))

    def __repr__(self) -> str:
        kind = "patient" if self.adaptation else "population"
        return (f"<Bundle {kind} {self.model_name}: {len(self.ch_names)} ch @ {self.sfreq:g} Hz, "
                f"{self.recipe.n_times} samples, classes={self.classes}"
                + (f", path={self.path}" if self.path else "") + ">")

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and check ``bundle.json`` without importing torch.

    Raises
    ------
    BundleError
        If the folder or file is missing, not JSON, not a bundle, of a newer
        format, or internally inconsistent.
    """
    path = Path(path)
    mfile = path / META_FILE
    recover_dir(path)
    if path.is_file() and (path.parent / META_FILE).is_file():
        raise BundleError(f"{path} is a file inside the bundle folder {path.parent}; give the folder")
    if path.is_file():
        raise BundleError(f"{path} is a file; a bundle is a folder holding {META_FILE} and {WEIGHTS_FILE}")
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    if not mfile.is_file():
        raise BundleError(f"{path}: not a bundle ({META_FILE} is missing)")
    try:
        meta = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{mfile}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{mfile}: not an eegtransfer bundle (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{mfile}: format version {version} is newer than this eegtransfer reads "
            f"({FORMAT_VERSION}); upgrade eegtransfer"
        )
    problems = []
    for key in ("model", "recipe", "ch_names", "sfreq", "classes", "weights"):
        if key not in meta:
            problems.append(f"'{key}' is missing")
    if problems:
        raise BundleError(f"{mfile}: " + "; ".join(problems))
    recipe, m = meta["recipe"], meta["model"]
    if recipe.get("channels") != meta["ch_names"]:
        problems.append(f"recipe channels {recipe.get('channels')} differ from ch_names {meta['ch_names']}")
    if m.get("n_chans") != len(meta["ch_names"]):
        problems.append(f"model n_chans={m.get('n_chans')} but {len(meta['ch_names'])} channel names")
    if m.get("n_outputs") != len(meta["classes"]):
        problems.append(f"model n_outputs={m.get('n_outputs')} but {len(meta['classes'])} classes")
    if not np.isclose(float(recipe.get("sfreq", -1)), float(meta["sfreq"])) or not np.isclose(float(m.get("sfreq", -1)), float(meta["sfreq"])):
        problems.append(f"sampling rates disagree: recipe {recipe.get('sfreq')}, model {m.get('sfreq')}, bundle {meta['sfreq']}")
    try:
        n_times = Recipe.from_dict(recipe).n_times
        if m.get("n_times") != n_times:
            problems.append(f"model n_times={m.get('n_times')} but the recipe window gives {n_times}")
    except EEGTransferError as err:
        problems.append(f"recipe: {err}")
    if problems:
        raise BundleError(f"{mfile}: inconsistent bundle: " + "; ".join(problems))
    check_checksums(meta, mfile)
    return meta


def verify_weights(path: str | Path) -> dict[str, Any]:
    """:func:`read_meta`, then check the weights file against its recorded SHA-256.

    Needs no torch, so a command can refuse an altered bundle before loading anything.
    """
    path = Path(path)
    meta = read_meta(path)
    wfile = path / meta["weights"]["file"]
    if not wfile.is_file():
        raise BundleError(f"{path}: weights file {wfile.name} is missing")
    digest = sha256_file(wfile)
    recorded = str(meta["weights"].get("sha256"))
    if digest != recorded:
        raise BundleError(
            f"{wfile}: SHA-256 {digest[:12]}... does not match the {recorded[:12]}... "
            "recorded in bundle.json; the weights were altered or corrupted"
        )
    return meta


# Without a trial count (bundles made before the binomial test was recorded), an accuracy
# within this margin of chance is treated as chance.
CHANCE_MARGIN = 0.05


def chance_level_warning(meta: dict[str, Any]) -> str:
    """Why a bundle's population model is at chance level, or ``""`` when it is not.

    A population is at chance when ``provenance["chance_level"]`` says so, or
    its validation accuracy was not above chance by the one-sided binomial
    test that :func:`eegtransfer.training.pretrain` records
    (``metrics["val_above_chance_p"] >= 0.05``), or, for bundles without that
    test, when ``val_acc`` is at most chance + :data:`CHANCE_MARGIN`.
    """
    prov, metrics = meta.get("provenance") or {}, meta.get("metrics") or {}
    if meta.get("adaptation"):  # a patient bundle: its population's verdict travels in provenance
        metrics = prov.get("population_metrics") or {}
    n_classes = len(meta.get("classes") or []) or 2
    chance = float(metrics.get("val_chance") or 1 / n_classes)
    acc, pval = metrics.get("val_acc"), metrics.get("val_above_chance_p")
    flagged = bool(prov.get("chance_level"))
    if pval is not None:
        at_chance = float(pval) >= 0.05
        why = f"binomial p = {float(pval):.2g}"
    else:
        at_chance = acc is not None and float(acc) <= chance + CHANCE_MARGIN
        why = f"within {CHANCE_MARGIN * 100:g} points"
    if not (flagged or at_chance):
        return ""
    acc_text = f"{float(acc):.3f}" if acc is not None else "unknown"
    return (f"chance-level population model: validation accuracy {acc_text} is not above chance "
            f"({chance:.3f}, {why}); its predictions are no better than guessing")


def _metric_lines(metrics: dict[str, Any], indent: str = "") -> list[str]:
    return [f"{indent}metric     {k} = {v:.4f}" if isinstance(v, float) else f"{indent}metric     {k} = {v}"
            for k, v in (metrics or {}).items()]


def _provenance_lines(p: dict[str, Any], indent: str = "") -> list[str]:
    lines = [f"{indent}{key:<10} {p[key]}" for key in
             ("dataset", "subjects", "validation_subjects", "seed", "device", "created", "train_seconds")
             if key in p]
    if "versions" in p:
        lines.append(f"{indent}versions   " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()))
    return lines


def _patient_lines(meta: dict[str, Any]) -> list[str]:
    """What makes a patient bundle: its calibration, its adaptation, then where it came from."""
    a, p = meta["adaptation"], meta.get("provenance") or {}
    cal, guard = a.get("calibration") or {}, a.get("guard") or {}
    lines = ["calibration (this patient)"]
    for r in cal.get("recordings") or []:
        lines.append(f"  recording  {r.get('path')} (sha256 {str(r.get('sha256'))[:12]})")
    if "selection" in cal:
        lines.append(f"  selection  {cal['selection']}: {a.get('n_calibration_trials')} trials, "
                     f"{cal.get('calibration_minutes')} min of recording; "
                     f"{cal.get('n_heldout_trials', 0)} held out")
    lines.append(f"  interpolated {', '.join(cal.get('interpolated') or []) or 'none'}")
    if cal.get("event_id"):
        lines.append(f"  event ids  {cal['event_id']}")
    lines.append(f"adaptation {a.get('strategy')}: steps {' -> '.join(a.get('steps') or []) or 'none'}, "
                 f"{a.get('n_calibration_trials')} trials, device {a.get('device')}, {a.get('seconds')} s"
                 + ("; NEW HEAD" if a.get("new_head") else ""))
    if guard:
        lines.append(f"  guard      kept {guard.get('kept')}: {guard.get('reason')}")
    else:
        lines.append(f"  guard      not applied: {a.get('guard_skipped') or 'unknown'}")
    if a.get("note") and a.get("note") != guard.get("reason"):
        lines.append(f"  note       {a['note']}")
    lines += _metric_lines(meta.get("metrics") or {}, "  ")
    lines.append(f"population (the model it was adapted from: {p.get('parent', 'unknown')})")
    lines += _provenance_lines(p, "  ") + _metric_lines(p.get("population_metrics") or {}, "  ")
    return lines


def summarize(meta: dict[str, Any]) -> str:
    """A person-readable summary of a bundle's metadata.

    A chance-level population puts a ``WARNING`` on the first line. A patient
    bundle shows its calibration and adaptation first, then the population it
    came from, labelled as such (its provenance is the population's).
    """
    m, r, p = meta["model"], meta["recipe"], meta.get("provenance") or {}
    warning = chance_level_warning(meta)
    lines = [f"WARNING    {warning}"] if warning else []
    lines += [
        f"model      {m['name']} ({'patient' if meta.get('adaptation') else 'population'} bundle)",
        f"channels   {len(meta['ch_names'])}: {', '.join(meta['ch_names'])}",
        f"sampling   {meta['sfreq']:g} Hz, window [{r['tmin']}, {r['tmax']}] s = {m['n_times']} samples",
        f"classes    {', '.join(meta['classes'])}",
        f"recipe     band {r['l_freq']}-{r['h_freq']} Hz, notch {r['notch']}, reference {r['reference']}, "
        f"x{r['scale']:g}, standardize={r['standardize']}",
    ]
    lines += expert_lines(meta)
    if meta.get("adaptation"):
        return "\n".join(lines + _patient_lines(meta))
    lines += _provenance_lines(p) + ([f"parent     {p['parent']}"] if "parent" in p else [])
    return "\n".join(lines + _metric_lines(meta.get("metrics") or {}))


def expert_lines(meta: dict[str, Any]) -> list[str]:
    """One ``expert     ...`` line per expert of a bundle's ``bundle.json`` (CCA, tangent space)."""
    return _expert_lines(meta.get("cca")) + _ts_lines(meta.get("ts"))


def _expert_lines(cca: dict[str, Any] | None) -> list[str]:
    """One line on the CCA expert: its frequencies, bands and part in the prediction."""
    if not cca:
        return []
    freqs = ", ".join(f"{v:g}" for v in cca["freqs"].values())
    bands = len(cca.get("bands") or [None])
    fitted = cca.get("fitted_weight")
    part = (f"weight {cca['weight']:.2f} in the product, the network's {cca.get('net_weight', 1.0):.2f}"
            if cca["weight"] > 0 else "a prior for the cca step, not used in predictions")
    if fitted is not None:
        net = cca.get("fitted_net_weight")
        part += (f"; exponents fitted on the validation subjects: expert {fitted:.2f}"
                 + ("" if net is None else f", network {net:.2f}"))
    return [f"expert     CCA at {freqs} Hz on {bands} band{'s' if bands > 1 else ''}: {part}"]


def _ts_lines(ts: dict[str, Any] | None) -> list[str]:
    """One line on the patient's tangent-space classifier, when there is one."""
    if not ts:
        return []
    n = len(ts["classes"])
    return [f"expert     tangent space + logistic regression on the patient's covariances ({n} classes): "
            f"weight {ts['weight']:.2f} in the product"]


def check_output_path(path: str | Path, *, overwrite: bool = False,
                      protect: list[str | Path | None] | None = None, what: str = "output") -> None:
    """Refuse an output that is, contains or sits inside a ``protect`` folder, or that exists.

    ``what`` names the output in the message (``"--out"``, ``"--report"``).
    A missing parent folder is refused too: outputs never create folders.
    """
    out = Path(path).absolute()
    for prot in protect or []:
        if prot is None:
            continue
        prot = Path(prot).absolute()
        if out == prot or prot in out.parents or out in prot.parents:
            raise EEGTransferError(f"{what} {path} is inside or contains the input bundle {prot}; "
                                   f"choose another {what if what.startswith('--') else '--out'}")
    if out.exists() and not overwrite:
        raise EEGTransferError(f"{what} {path} already exists; pass overwrite=True to replace it")
    # Never create a folder nobody named: a typo in a parent would otherwise become a new tree.
    if not out.parent.is_dir():
        raise EEGTransferError(f"{what} {path}: its folder {out.parent} does not exist; create it first")


def _token() -> str:
    """``host-pid-random``: names a writer's temporary siblings so a later run can tell if it died."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _writer_is_dead(token: str) -> bool:
    """Whether the writer named by ``token`` is a process of this host that no longer runs.

    A writer on another host (a shared folder) cannot be judged: it counts as alive.
    """
    host, _, rest = token.rpartition("-")[0].rpartition("-")
    try:
        pid = int(rest)
    except ValueError:
        return False
    if host != _token().rsplit("-", 2)[0] or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def _fsync_path(path: Path) -> None:
    """Flush a file or folder to disk (folders: their entries; not possible on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def recover_dir(path: str | Path) -> None:
    """Undo what a killed writer of ``path`` left: restore the old folder, remove its temporaries.

    A writer renames the old ``path`` aside (``.NAME.old-TOKEN``) just before
    renaming its complete new folder into place. Killed between the two, it
    leaves no ``path``: the old folder is put back (the write never happened).
    Temporaries of writers that are dead (same host, pid gone) are removed;
    those of live writers, or of other hosts, are left alone.
    """
    path = Path(path).absolute()
    prefix = f".{path.name}."
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    dead = []
    for p in siblings:
        kind, _, token = p.name[len(prefix):].partition("-")
        if kind in ("tmp", "old") and _writer_is_dead(token):
            dead.append((kind, p))
    olds = sorted((p for kind, p in dead if kind == "old"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        try:
            os.rename(olds[-1], path)
            logger.warning("%s: restored the previous version after an interrupted write", path)
        except OSError:  # another process restored it first
            pass
    for _, p in dead:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink(missing_ok=True)


def _put_back(old: Path, path: Path) -> None:
    """After a failed replace: restore the user's folder, unless another writer's is now in place."""
    try:
        os.rename(old, path)
    except OSError:  # path exists again: a complete folder of another writer
        shutil.rmtree(old, ignore_errors=True)


def write_dir_atomic(path: Path, write: Any, *, overwrite: bool = False,
                     protect: list[Path | None] | None = None) -> None:
    """Create folder ``path`` by calling ``write(tmp)`` on a temporary sibling, then renaming.

    The new folder is flushed to disk before it is renamed into place, so a
    crash leaves the complete old or the complete new folder (see
    :func:`recover_dir`). Nothing is left behind if ``write`` fails. An
    existing ``path`` is only replaced when ``overwrite`` is true, and never
    when it contains or is one of the ``protect`` folders (the bundle being
    read). The folder and files get the user's umask (a colleague may read them).
    """
    path = Path(path).absolute()
    recover_dir(path)
    check_output_path(path, overwrite=overwrite, protect=protect)
    try:  # one stat: another writer may move the folder between two calls
        is_file = not stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        is_file = False
    if is_file:
        raise EEGTransferError(f"{path} exists and is not a folder; refusing to replace it")
    token = _token()
    tmp = path.with_name(f".{path.name}.tmp-{token}")
    tmp.mkdir(mode=0o777)  # 0o777 & ~umask, where mkdtemp would give 0o700
    old = None
    try:
        write(tmp)
        _fsync_tree(tmp)
        try:
            if path.exists():
                old = path.with_name(f".{path.name}.old-{token}")
                os.rename(path, old)
            os.rename(tmp, path)
        except OSError as err:  # another process replaced or created it between our steps
            raise EEGTransferError(f"{path} could not be written: {err.strerror} (is another process "
                                   "writing it at the same time?)") from None
        _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            _put_back(old, path)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file_atomic(path: str | Path, data: str | bytes, *, overwrite: bool = True) -> Path:
    """Write a file via a flushed temporary sibling and ``os.replace``, with the user's umask."""
    path = Path(path)
    check_output_path(path, overwrite=overwrite, what="file")
    recover_dir(path)
    tmp = path.with_name(f".{path.name}.tmp-{_token()}")
    # os.open with 0o666 applies the umask; mkstemp would give 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
