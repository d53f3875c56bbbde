"""
Read the report
===============

A report answers "should I trust this?" before anything else: a verdict against chance,
warnings with their severity, then the evidence.
"""

# %%
# The verdict: the held-out accuracy with a 95% Wilson interval, against the chance level
# (the most frequent held-out class), with a one-sided binomial test.
from eegtransfer.bundle import read_meta
from eegtransfer.report import findings, report_of, score_against_chance, verdict

meta = read_meta("patient")          # bundle.json only: no torch needed
headline, sentence = verdict(meta)
print(headline, "-", sentence)

# %%
# The same numbers by hand: 30 of 40 trials right with 4 balanced classes.
print(score_against_chance(30, 40, 0.25))

# %%
# The warnings, most severe first: population at chance, near-uniform probabilities,
# interpolated channels, one recording per class, a skipped guard, a new head.
for f in findings(meta):
    print(f"{f.severity:>6}  {f.title}")

# %%
# The whole report as an :class:`mne.Report`, to save or to show in a notebook.
report = report_of("patient")
report.save("patient.html", open_browser=False, overwrite=True)
