"""
Pretrain a population model
===========================

Train EEGNet on ten Kalunga2016 subjects (validation split **by subject**) and save a
population bundle with its report.
"""

# %%
# Load the population's trials with one preprocessing recipe. MOABB reads its cache from
# ``MNE_DATA``; known duplicated recordings are removed.
from eegtransfer.io import load_dataset
from eegtransfer.report import report_of
from eegtransfer.training import pretrain

X, meta, recipe = load_dataset("Kalunga2016", list(range(2, 12)))
print(X.shape, recipe.sfreq, recipe.channels)

# %%
# Pretrain. Early stopping watches subjects the model never trained on.
population = pretrain(X, meta["label"].to_numpy(), meta, recipe, model="EEGNet", align=True, seed=0)
print(population.metrics)

# %%
# Save it (atomic; never overwrites unless asked) and write its report: the validation score
# against chance and the learning curves.
population.save("population")
report_of("population").save("population.html", open_browser=False, overwrite=True)
