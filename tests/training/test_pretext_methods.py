import pytest
import torch

from ecg_transfer.models.cae import ConvAutoencoder
from ecg_transfer.models.pretext import ContrastiveModel, MaskedAutoencoder
from ecg_transfer.signals.augment import BaselineWander, default_augmentations
from ecg_transfer.training.pretext_methods import PretextMethod, methods_from_params
from ecg_transfer.training.pretext_tasks import (
    ContrastiveTask,
    MaskedReconstructionTask,
    PairedWindows,
)
from ecg_transfer.training.tasks import ReconstructionTask
from tests.tiny import TINY_CAE

METHODS = {
    "cae": {"task": "reconstruct"},
    "simclr": {"task": "contrastive", "temperature": 0.2, "augmentations": [{"name": "baseline_wander"}]},
    "clocs": {"task": "contrastive", "positives": "same_record"},
    "masked": {"task": "masked", "mask_ratio": 0.3, "span_length": 16, "training": {"lr": 0.001}},
}


def test_each_method_builds_its_model_and_task_around_the_caes_encoder():
    methods = methods_from_params(METHODS)
    built = {name: (method.build(TINY_CAE, fs=62.5), method.task_strategy()) for name, method in methods.items()}
    assert [type(m).__name__ for m, _ in built.values()] == [
        ConvAutoencoder.__name__, ContrastiveModel.__name__, ContrastiveModel.__name__, MaskedAutoencoder.__name__]
    assert isinstance(built["cae"][1], ReconstructionTask) and isinstance(built["masked"][1], MaskedReconstructionTask)
    assert built["simclr"][1].describe() == ContrastiveTask(0.2).describe()
    assert built["clocs"][0].paired and not built["simclr"][0].paired
    # A listed baseline wander runs at the windows' rate unless the list sets one.
    assert built["simclr"][0].augmentations.steps == (BaselineWander(fs=62.5),)
    assert built["clocs"][0].augmentations == default_augmentations(62.5)
    assert built["masked"][0].masking.mask_ratio == 0.3 and methods["masked"].training == {"lr": 0.001}
    assert methods["simclr"].describe() == {
        "method": "simclr", "task": "contrastive", "training_overrides": {},
        "options": {"temperature": 0.2, "augmentations": [{"name": "baseline_wander"}]}}


def test_reading_methods_draws_no_random_numbers():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    methods_from_params(METHODS)
    assert torch.equal(torch.rand(1), expected)


def test_same_record_methods_read_pairs_of_one_records_windows():
    x = torch.arange(8.0).view(4, 2).numpy()
    records = ["a", "a", "b", "b"]
    clocs, simclr = PretextMethod.from_params("clocs", METHODS["clocs"]), PretextMethod.from_params("s", METHODS["simclr"])
    pairs, codes = clocs.inputs(x, records, seed=0)
    assert isinstance(pairs, PairedWindows) and pairs[0:4].tolist() == [[0, 1, 2, 3], [2, 3, 0, 1], [4, 5, 6, 7], [6, 7, 4, 5]]
    assert codes.tolist() == [0, 0, 1, 1]  # each row's record: its windows are no negatives of each other
    windows, labels = simclr.inputs(x, records, seed=0)
    assert windows is x and labels is None


@pytest.mark.parametrize(
    "methods, message",
    [({"x": {"task": "rotate"}}, r"pretraining.methods.x.task: must be one of"),
     ({"x": {}}, "pretraining.methods.x: needs a task"),
     ({"x": {"task": "reconstruct", "lr": 1}}, r"unknown option\(s\) \['lr'\] for task reconstruct"),
     ({"x": {"task": "reconstruct", "training": {"lr": 1}}}, "trains with pretraining.training itself"),
     ({"x": {"task": "masked", "temperature": 1}}, r"unknown option\(s\) \['temperature'\] for task masked"),
     ({"x": {"task": "masked", "mask_ratio": 2}}, "pretraining.methods.x: MaskingConfig: mask_ratio"),
     ({"x": {"task": "contrastive", "temperature": -1}}, "pretraining.methods.x: ContrastiveTask: temperature"),
     ({"x": {"task": "contrastive", "augmentations": [{"name": "warp"}]}}, r"x: augmentations\[0\]: unknown augmentation"),
     ({"x": {"task": "contrastive", "projection_features": 0}}, "projection widths"),
     ({"a": {"task": "reconstruct"}, "b": {"task": "reconstruct"}}, "the CAE is trained once"),
     ({"2x": {"task": "masked"}}, "a method name must be")],
)
def test_bad_methods_are_refused_naming_the_setting(methods, message):
    with pytest.raises(ValueError, match=message):
        methods_from_params(methods)


def test_every_method_builds_for_windows_of_several_leads():
    # Issue 19: every pretext task takes C input channels (the refusal of C > 1 is gone).
    from dataclasses import replace

    three = replace(TINY_CAE, in_channels=3)
    for name, method in methods_from_params(METHODS).items():
        model = method.build(three, fs=62.5)
        assert model.encoder.blocks[0].conv1.in_channels == 3, name
        length = model.input_length
        out = model(torch.randn(4, 3, length))
        assert out.shape[0] == 4 and torch.isfinite(out).all(), name
