import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from ecg_transfer.models.image_backbones import (
    GOOGLENET_WEIGHTS_FILE,
    BackboneUnavailableError,
    load_backbone,
)

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def _photo(name: str, backbone) -> torch.Tensor:
    from skimage import data

    pixels = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255.0
    pixels = nn.functional.interpolate(
        pixels, size=(backbone.input_size,) * 2, mode="bilinear", align_corners=False, antialias=True
    )
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def test_lite0_recognises_a_cat(lite0):
    with torch.inference_mode():
        logits = lite0.classifier(lite0.module(_photo("chelsea", lite0)))
    top3 = logits[0].topk(3).indices.tolist()
    assert set(top3) & CAT_CLASSES, f"no cat class among the top 3 {top3}"
    assert torch.softmax(logits[0], 0)[top3[0]] > 0.5 and top3[0] in CAT_CLASSES


def test_lite0_recognises_an_espresso(lite0):
    with torch.inference_mode():
        logits = lite0.classifier(lite0.module(_photo("coffee", lite0)))
    assert logits[0].argmax().item() in {967, 968}  # espresso, cup


def test_lite0_features_are_the_pooled_pre_classifier_vector(lite0):
    images = _photo("chelsea", lite0)
    with torch.inference_mode():
        features = lite0.module(images)
        full_logits = lite0.module.network(images)  # the package's own forward (eval: no dropout)
    assert features.shape == (1, lite0.feature_dim) == (1, 1280)
    torch.testing.assert_close(lite0.classifier(features), full_logits)


def test_lite0_is_frozen_and_in_eval_mode(lite0):
    assert not lite0.module.training and not lite0.classifier.training
    assert all(not p.requires_grad for p in lite0.module.parameters())
    assert lite0.input_size == 224
    np.testing.assert_allclose(lite0.mean, [127 / 255] * 3)
    np.testing.assert_allclose(lite0.std, [128 / 255] * 3)


def test_lite0_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(BackboneUnavailableError, match="nowhere.pth"):
        load_backbone("efficientnet_lite0", weights_path=missing)


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_backbone("resnet9000")


def test_googlenet_without_torchvision_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(BackboneUnavailableError) as caught:
        load_backbone("googlenet")
    message = str(caught.value)
    assert "torchvision" in message and "pip install" in message
    assert str(tmp_path / "checkpoints" / GOOGLENET_WEIGHTS_FILE) in message


class _FakeGoogLeNet(nn.Module):
    """Stands in for torchvision's GoogLeNet (not installable here): same constructor
    arguments, same attribute names and eval-mode forward contract."""

    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False, init_weights=None):
        super().__init__()
        self.transform_input = transform_input
        self.aux_logits = aux_logits
        self.conv = nn.Conv2d(3, 1024, kernel_size=3, stride=8)
        self.aux1 = nn.Linear(4, num_classes) if aux_logits else None
        self.aux2 = nn.Linear(4, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(torch.flatten(self.avgpool(self.conv(x)), 1)))


def _fake_torchvision(monkeypatch):
    models = types.ModuleType("torchvision.models")
    models.GoogLeNet = _FakeGoogLeNet
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)


def test_googlenet_missing_weights_file_says_where_to_put_it(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch)
    missing = tmp_path / "googlenet.pth"
    with pytest.raises(BackboneUnavailableError, match="download.pytorch.org") as caught:
        load_backbone("googlenet", weights_path=missing)
    assert str(missing) in str(caught.value) and "random weights" in str(caught.value)


def test_googlenet_wiring_with_a_stand_in_network(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch)
    torch.manual_seed(0)  # only for the stand-in's throwaway initial weights
    reference = _FakeGoogLeNet(aux_logits=True).eval()
    weights = tmp_path / "checkpoints" / GOOGLENET_WEIGHTS_FILE
    weights.parent.mkdir()
    torch.save(reference.state_dict(), weights)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    backbone = load_backbone("googlenet")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        features = backbone.module(images)
        logits = backbone.classifier(features)
        expected = reference(images)
    assert features.shape == (2, 1024) and backbone.feature_dim == 1024
    torch.testing.assert_close(logits, expected)
    assert backbone.module.aux1 is None and backbone.module.transform_input
    assert all(not p.requires_grad for p in backbone.module.parameters())
    assert backbone.mean == (0.485, 0.456, 0.406)

