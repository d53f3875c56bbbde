"""What an adaptation did, as data stored in the patient bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class GuardDecision:
    """The negative-transfer guard's comparison and what it kept.

    Attributes
    ----------
    kept : str
        ``"adapted"``, ``"zero-shot"`` or the label-free steps alone (e.g. ``"align"``).
    compared : dict
        Model name -> ``{"log_loss": ..., "accuracy": ...}`` on the compared trials.
    margin : float
        Log-loss (nats per trial) by which the adapted model must beat the best fallback.
    n_folds : int
        Chronological folds of the calibration trials (cross-fitting).
    n_compared : int
        Calibration trials compared, each scored by models that neither fitted on it nor
        early-stopped on it.
    reason : str
    """

    kept: str
    compared: dict[str, dict[str, float]]
    margin: float
    n_folds: int
    n_compared: int
    reason: str


@dataclass
class AdaptationReport:
    """How a patient bundle was made from its population bundle.

    Attributes
    ----------
    strategy : str
        As asked (``"align+head"``, ``"auto"``, or the names of user steps).
    steps : list of str
        The steps that ran, in order (after the guard: those of the model kept).
    n_calibration_trials, n_unlabeled_trials : int
    trainable : list of str
        Parameters that changed.
    new_head : bool
        A head was trained for classes the population model lacks.
    guard : GuardDecision | None
        ``None`` when the guard did not run; ``guard_skipped`` says why.
    guard_skipped : str
    chosen : str | None
        The strategy ``auto`` chose, ``candidates`` its cross-fitted log-loss per candidate.
    note : str
        One sentence for the operator.
    details : dict
        Facts of the steps (alignment trials, batch-norm layers, training summaries).
    calibration : dict
        Facts about the calibration data given by the caller (minutes, files, hashes, events).
    device : str
    seconds : float
    """

    strategy: str
    steps: list[str]
    n_calibration_trials: int
    n_unlabeled_trials: int = 0
    trainable: list[str] = field(default_factory=list)
    new_head: bool = False
    guard: GuardDecision | None = None
    guard_skipped: str = ""
    chosen: str | None = None
    candidates: dict[str, float] = field(default_factory=dict)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AdaptationReport | None:
        """Read a stored report; unknown keys (a newer writer) go to ``details``."""
        if not data:
            return None
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("strategy", str(data.get("strategy", "")))
        known.setdefault("steps", [])
        known.setdefault("n_calibration_trials", int(data.get("n_calibration_trials", 0)))
        extra = {k: v for k, v in data.items() if k not in names}
        if isinstance(known.get("guard"), dict):
            known["guard"] = GuardDecision(**known["guard"])
        elif not isinstance(known.get("guard"), GuardDecision):
            known["guard"] = None
        known["details"] = {**dict(known.get("details") or {}), **extra}
        return cls(**known)
