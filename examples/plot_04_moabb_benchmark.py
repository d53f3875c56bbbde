"""
A MOABB benchmark
=================

Compare the adapted model with pyRiemann baselines in MOABB's cross-subject evaluation, each
held-out subject getting the first half of its session as labelled calibration data.
"""

# %%
# The estimator pretrains on the other subjects (cached under ``$EEGTRANSFER_CACHE``) and adapts
# to the calibration slice that MOABB routes to it.
from moabb.datasets import Kalunga2016
from moabb.evaluations import CrossSubjectEvaluation
from moabb.paradigms import SSVEP
from sklearn.pipeline import make_pipeline

from eegtransfer import SubjectAdaptiveClassifier

pipelines = {"EEGNet+head": make_pipeline(SubjectAdaptiveClassifier(model="EEGNet", strategy="head"))}
evaluation = CrossSubjectEvaluation(paradigm=SSVEP(resample=128), datasets=[Kalunga2016()],
                                    cv_kwargs={"calibration_size": 0.5, "calibration_labeled": True})

# %%
# Run it; the result is MOABB's usual table, one row per subject and pipeline.
results = evaluation.process(pipelines)
print(results.groupby("pipeline")["score"].describe())

# %%
# The command line runs the baselines, the calibration curve and the plots::
#
#     eegtransfer benchmark --datasets Kalunga2016 --subjects 1 2 3 --calibration-sizes 0.2 0.5 \
#         --strategies head last-k --epochs 20 --out bench/
