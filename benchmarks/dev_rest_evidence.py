"""The CCA expert with less or no evidence about ``rest``, on the nested development set.

On validation subjects' later runs, the cells where ``auto`` ends more than 5 points below the
zero-shot network are those where its winner calls stimulated trials ``rest``
(``results/dev_combine/full_say/combine.md``): the expert learns ``rest`` from the overall level of the
canonical correlations, and that level falls between a subject's runs. This runs ``dev_nested.py``
unchanged except for the expert's probabilities. With ``--rest-evidence 0``: over the stimulation
classes, its softmax over those classes only; for a class without a frequency,
``1 / n_stimulation_classes``, no evidence either way, so ``rest`` against stimulation is decided
by the network (and the ``ts`` expert), which frequency by all. ``--rest-evidence 0.5`` averages
those log-probabilities with the expert's own (half its say). The population's exponents are
refitted with it (the cached networks are reused, their expert refitted).

Decision rule, written down before each run (0, then 0.5; no other value): adopt it if, per
target, ``dev_nested.py``'s selection (fewest harmed cells, then the higher mean) prefers it to
``auto`` for at least 6 of the 11 targets, and ``auto``'s mean falls by at most 0.5 points in
every window. Outcome (``results/dev_rest_evidence/recipes.md``): 0 cut the harmed cells from
7 / 7 / 1 to 2 / 2 / 0 and was preferred by 6 targets, but cost 3.8 / 3.8 / 2.7 points: not
adopted. 0.5 cut them to 5 / 5 / 0, moved ``auto`` by +1.2 / +1.0 / +0.4 and was preferred by 10:
adopted as :data:`eegtransfer.ssvep.REST_EVIDENCE`, which the package now uses without this
script (it reproduced the 0.5 run's first two pairs). The runs patched the expert with a copy
of the formula that is now ``CCAExpert.log_proba``'s; this script sets ``rest_evidence`` instead
(``_devset.rest_evidence``). ::

    R=benchmarks/results/dev_rest_evidence
    python benchmarks/dev_rest_evidence.py --pairs 0-27 --out benchmarks/out/rest_a --pop-cache DIR --rest-evidence 0 &
    python benchmarks/dev_rest_evidence.py --pairs 28-54 --out benchmarks/out/rest_b --pop-cache DIR --rest-evidence 0 &
    wait; python benchmarks/dev_nested.py --merge benchmarks/out/rest_a benchmarks/out/rest_b --out $R/none
    (the same with --rest-evidence 0.5, rest5_a / rest5_b, into $R/half)
    python benchmarks/dev_nested.py --compare benchmarks/results/dev_recipe/epochs50 $R/none $R/half --out $R

``--rest-evidence`` is required and sets every expert's say (1: the expert as before
``REST_EVIDENCE``, which reproduces the development results made before it with
``dev_nested.py``); the other options are ``dev_nested.py``'s, ``--pop-cache`` the folder of its
run with the same recipe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev_nested  # noqa: E402
from _devset import rest_evidence, share  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """``--rest-evidence SHARE``, then ``dev_nested.py``'s arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other options: dev_nested.py's.")
    p.add_argument("--rest-evidence", type=share, required=True, help="0: none; 0.5: half; 1: all")
    a, rest = p.parse_known_args(argv)
    value = a.rest_evidence
    variant = "expert without rest evidence" if value == 0 else f"expert with {value:g} of its rest evidence"
    with rest_evidence(value):
        return dev_nested.main(rest, variant=variant)


if __name__ == "__main__":
    raise SystemExit(main())
