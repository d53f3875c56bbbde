import pytest
import torch

from eegtransfer.errors import EEGTransferError
from eegtransfer.models import build_model, final_parameter_names, known_models


@pytest.mark.parametrize("name", ["EEGNet", "ShallowFBCSPNet", "Deep4Net", "EEGConformer", "ATCNet"])
def test_build_and_forward(name):
    n_times = 1000 if name == "Deep4Net" else 512
    model = build_model(name, n_chans=8, n_outputs=4, n_times=n_times, sfreq=128)
    out = model.eval()(torch.randn(2, 8, n_times))
    assert out.shape == (2, 4)
    head = final_parameter_names(model, name, k=0)
    assert head and all(n.startswith("final_layer") for n in head)
    more = final_parameter_names(model, name, k=1)
    assert set(head) < set(more)
    everything = {n for n, _ in model.named_parameters()}
    assert set(more) < everything


def test_unknown_model_lists_known():
    with pytest.raises(EEGTransferError, match="known models: " + ", ".join(known_models())):
        build_model("ResNet9000", 8, 4, 512, 128)


def test_case_insensitive_name():
    assert type(build_model("eegnet", 8, 2, 256, 128)).__name__ == "EEGNet"


def test_too_many_blocks():
    model = build_model("ShallowFBCSPNet", 8, 4, 512, 128)
    with pytest.raises(EEGTransferError, match="has 2 before its head"):
        final_parameter_names(model, "ShallowFBCSPNet", k=3)
