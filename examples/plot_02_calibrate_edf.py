"""
Calibrate a patient from an EDF file
====================================

Adapt the population model to one patient's own EDF+ recording, whose annotations name the
classes, keep the trials of the first 3 minutes for calibration and score the rest.
The command line does the same in one line::

    eegtransfer calibrate --model population --recording patient.edf --minutes 3 \\
        --out patient --report patient.html
"""

# %%
# Read the file with the population's recipe: channels are matched by name (``EEG Oz-REF``
# is ``Oz``), resampled and cut into trials at the annotations.
from eegtransfer.adaptation import adapt, select_calibration
from eegtransfer.bundle import Bundle
from eegtransfer.evaluation import score_bundle
from eegtransfer.io import load_recording

population = Bundle.load("population")
rec = load_recording("/path/to/patient.edf", population.recipe, classes=population.classes)
print(rec.summary())

# %%
# The first 3 minutes in recording time calibrate; the later trials are held out.
cal = select_calibration(rec.meta, minutes=3, trial_seconds=population.recipe.tmax)
labels = rec.meta["label"].to_numpy()
patient = adapt(population, rec.X[cal], labels[cal], strategy="align+head")
print(patient.adaptation.note)

# %%
# Score on the held-out trials, then save the patient bundle.
print(score_bundle(patient, rec.X[~cal], labels[~cal]))
patient.save("patient")
