"""The paper's 1-D convolutional autoencoder (CAE) and its encoder.

The paper fixes: nine residual blocks, each two convolutions with kernel 19 and
stride 1, batch norm and ReLU; a 60-feature code; a decoder of the same
structure with transposed convolutions back to 2,048 samples; MSE loss. It does
not give channel widths, padding or how the length shrinks, so those are
:class:`CaeConfig` fields (see docs/models_and_training.md for the defaults,
the measurements behind them and a wider ``paper`` preset).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ecg_transfer.runs import COSMETIC
from ecg_transfer.typed_config import config_from_params

POOLING_KINDS = ("max", "avg")
#: How a randomly initialised encoder starts (:func:`init_encoder`).
INIT_SCHEMES = ("cae", "standard")
UPSAMPLING_KINDS = ("nearest", "linear")


@dataclass(frozen=True)
class CaeConfig:
    """Architecture of the CAE; the encoder of every classifier arm reuses it.

    ``channels`` holds the output width of each residual block. The default is
    narrow so that the whole default study fits in minutes on a 2-core CPU;
    widths grow as the signal shrinks so the compute per block stays flat.
    ``pool_factors``: after encoder block i the length is divided by
    ``pool_factors[i]`` (and the decoder multiplies it back before the mirrored
    block). Pooling early by 4 keeps the full-length blocks few, which is where
    a CPU spends its time (see the docs' measurements). The default stops at
    64 positions (32 samples each) before the flatten + linear to 60: a code
    map of 4 positions (pooling by 512) left the CAE predicting zero, because
    the R-peak positions could not get through it.
    ``upsampling``: how the decoder undoes each pooling ("linear" or "nearest").
    ``final_relu``: whether each residual block ends in ReLU after the skip sum
    (the classic post-activation block). Off by default, so the skip paths from
    the input to the code and from the code to the output stay linear; with it
    on (and max pooling, nearest upsampling) the CAE did not learn on our windows.
    ``zero_init_residual``: start the last BN gamma of every block at zero, so
    each block starts as its skip.
    ``in_channels``: the leads of a window (1: lead II, the paper's; C for a study of C
    ``preprocessing.leads``): the encoder's first block reads them and the decoder
    reconstructs them. The nodes set it from the window store (:meth:`for_windows`).
    """

    window_length: int = 2048
    n_blocks: int = 9
    kernel_size: int = 19
    channels: tuple[int, ...] = (4, 8, 8, 16, 16, 16, 16, 16, 16)
    bottleneck: int = 60
    pool_factors: tuple[int, ...] = (4, 4, 2, 1, 1, 1, 1, 1, 1)
    pooling: str = "avg"
    upsampling: str = "linear"
    final_relu: bool = False
    zero_init_residual: bool = True
    # Out of the run keys (marked like a cosmetic field): the windows decide it, and every key
    # that trains on windows hashes their store's metadata, which names the leads of C > 1.
    in_channels: int = field(default=1, metadata=COSMETIC)

    def __post_init__(self) -> None:
        # Lists arrive from YAML parameters; the dataclass is frozen and hashed.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "pool_factors", tuple(int(p) for p in self.pool_factors))
        if len(self.channels) != self.n_blocks:
            raise ValueError(
                f"CaeConfig: channels has {len(self.channels)} entries but n_blocks is "
                f"{self.n_blocks}; give one width per residual block"
            )
        if any(c < 1 for c in self.channels):
            raise ValueError(f"CaeConfig: channel widths must be >= 1, got {self.channels}")
        if self.kernel_size % 2 != 1:
            raise ValueError(
                f"CaeConfig: kernel_size must be odd for 'same' padding, got {self.kernel_size}"
            )
        if self.pooling not in POOLING_KINDS:
            raise ValueError(f"CaeConfig: pooling must be one of {POOLING_KINDS}, got {self.pooling!r}")
        if self.upsampling not in UPSAMPLING_KINDS:
            raise ValueError(
                f"CaeConfig: upsampling must be one of {UPSAMPLING_KINDS}, got {self.upsampling!r}"
            )
        if len(self.pool_factors) != self.n_blocks:
            raise ValueError(
                f"CaeConfig: pool_factors has {len(self.pool_factors)} entries but n_blocks is "
                f"{self.n_blocks}; give one factor per residual block (1 = no pooling)"
            )
        if any(p < 1 for p in self.pool_factors):
            raise ValueError(f"CaeConfig: pool factors must be >= 1, got {self.pool_factors}")
        if self.window_length % math.prod(self.pool_factors) != 0:
            raise ValueError(
                f"CaeConfig: window_length {self.window_length} is not divisible by the "
                f"product of pool_factors {self.pool_factors} = {math.prod(self.pool_factors)}; "
                "the decoder could not return to the input length"
            )
        if self.bottleneck < 1:
            raise ValueError(f"CaeConfig: bottleneck must be >= 1, got {self.bottleneck}")
        if isinstance(self.in_channels, bool) or int(self.in_channels) != self.in_channels or self.in_channels < 1:
            raise ValueError(f"CaeConfig: in_channels must be a positive integer, got {self.in_channels!r}")

    @property
    def code_length(self) -> int:
        """Positions left after the last pooling, before the flatten + linear."""
        return self.window_length // math.prod(self.pool_factors)

    @classmethod
    def from_dict(cls, params: dict, where: str = "pretraining.cae") -> CaeConfig:
        """Build from a parameters dict (:func:`~ecg_transfer.typed_config.config_from_params`:
        unknown keys and wrong types are refused, naming ``where.key``)."""
        return config_from_params(cls, params, where)

    @classmethod
    def for_windows(cls, params: dict, windows, where: str = "pretraining.cae") -> CaeConfig:
        """From the parameters, with ``in_channels`` the number of leads of ``windows`` (a
        window store, or anything with ``n_channels``): the data decides it. A parameter
        ``in_channels`` that says otherwise is refused, naming both."""
        cfg = cls.from_dict(params, where)
        n_channels = int(getattr(windows, "n_channels", 1))
        if "in_channels" in (params or {}) and cfg.in_channels != n_channels:
            raise ValueError(
                f"{where}.in_channels is {cfg.in_channels} but the windows hold {n_channels} lead(s)"
            )
        return dataclasses.replace(cfg, in_channels=n_channels)


#: The wider "paper" preset (same pool_factors): closer to common ECG ResNets, ~16x the compute.
PAPER_WIDTH_CHANNELS = (16, 32, 32, 64, 64, 64, 64, 64, 64)

#: The first design (docs/models_and_training.md, "Making the CAE learn"): post-activation blocks,
#: max pooling down to 4 positions, nearest upsampling. Its CAE stays at MSE 1.0.
LEGACY_CONFIG_FIELDS = dict(
    channels=(4, 8, 8, 16, 16, 32, 32, 32, 32),
    pool_factors=(4, 4, 2, 2, 2, 2, 2, 1, 1),
    pooling="max",
    upsampling="nearest",
    final_relu=True,
    zero_init_residual=False,
)


class SingleInputPointwiseConv1d(nn.Conv1d):
    """A 1x1 Conv1d from one input channel, computed as a broadcast multiply.

    Same parameters and state_dict as ``nn.Conv1d(1, c, 1, bias=False)`` and the
    same output; the first block's skip runs at the full 2,048 samples, where the
    oneDNN kernel for this degenerate shape cost ~20% of a classifier training
    step on the 2-core CPU (838 -> 1,000 windows/s at batch 64 without it).
    """

    def __init__(self, out_channels: int):
        super().__init__(1, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a skip (then ReLU if ``final_relu``); stride 1, length kept.

    ``transposed`` selects ConvTranspose1d for the decoder, as the paper says.
    A 1x1 projection (with batch norm) sits on the skip only when the width changes.
    ``zero_init_residual`` starts bn2's gamma at 0, so the block starts as its skip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        transposed: bool,
        final_relu: bool = True,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.final_relu = final_relu
        conv = nn.ConvTranspose1d if transposed else nn.Conv1d
        padding = kernel_size // 2
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=1, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel_size, stride=1, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if in_channels != out_channels:
            if in_channels == 1 and not transposed:
                projection = SingleInputPointwiseConv1d(out_channels)
            else:
                projection = conv(in_channels, out_channels, 1, stride=1, bias=False)
            self.skip = nn.Sequential(projection, nn.BatchNorm1d(out_channels))
        else:
            self.skip = nn.Identity()
        self.zero_init_residual = zero_init_residual
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def reset_parameters(self) -> None:
        """Re-draw every layer as at construction, the zero-init of bn2 included, so a network
        re-initialised from a seed starts like a newly built one (see models/classifier.py)."""
        for layer in self.modules():
            if layer is not self and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        if self.zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.skip(x)
        return self.relu(out) if self.final_relu else out


def _pool(kind: str, factor: int) -> nn.Module:
    if factor == 1:
        return nn.Identity()
    if kind == "max":
        return nn.MaxPool1d(factor)
    return nn.AvgPool1d(factor)


def _upsample(kind: str, factor: int) -> nn.Module:
    if factor == 1:
        return nn.Identity()
    if kind == "nearest":
        return nn.Upsample(scale_factor=factor, mode="nearest")
    return nn.Upsample(scale_factor=factor, mode="linear", align_corners=False)


def with_channel_axis(windows: torch.Tensor) -> torch.Tensor:
    """Windows as the convolutions take them: one-lead (B, L) windows get their channel axis,
    (B, 1, L); windows of C leads are (B, C, L) already and pass unchanged."""
    return windows.unsqueeze(1) if windows.dim() == 2 else windows


class Encoder(nn.Module):
    """(B, C, L) -> (B, bottleneck): nine residual blocks, each followed by pooling
    (C = ``cfg.in_channels``, 1 by default)."""

    def __init__(self, cfg: CaeConfig):
        super().__init__()
        self.cfg = cfg
        self.input_length = cfg.window_length  # the training loop feeds (B, C, input_length) windows
        widths_in = (cfg.in_channels,) + cfg.channels[:-1]
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c_in, c_out, cfg.kernel_size, transposed=False,
                final_relu=cfg.final_relu, zero_init_residual=cfg.zero_init_residual,
            )
            for c_in, c_out in zip(widths_in, cfg.channels)
        )
        self.pools = nn.ModuleList(_pool(cfg.pooling, f) for f in cfg.pool_factors)
        self.to_code = nn.Linear(cfg.channels[-1] * cfg.code_length, cfg.bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.cfg.in_channels or x.shape[2] != self.cfg.window_length:
            raise ValueError(
                f"Encoder expects (batch, {self.cfg.in_channels}, {self.cfg.window_length}) "
                f"(in_channels = the windows' leads), got {tuple(x.shape)}"
            )
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
        return self.to_code(torch.flatten(x, 1))


class Decoder(nn.Module):
    """(B, bottleneck) -> (B, C, L): the encoder mirrored with transposed convolutions."""

    def __init__(self, cfg: CaeConfig):
        super().__init__()
        self.cfg = cfg
        mirrored = cfg.channels[::-1]
        self.from_code = nn.Linear(cfg.bottleneck, mirrored[0] * cfg.code_length)
        widths_out = mirrored[1:] + (cfg.channels[0],)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c_in, c_out, cfg.kernel_size, transposed=True,
                final_relu=cfg.final_relu, zero_init_residual=cfg.zero_init_residual,
            )
            for c_in, c_out in zip(mirrored, widths_out)
        )
        self.upsamples = nn.ModuleList(_upsample(cfg.upsampling, f) for f in cfg.pool_factors[::-1])
        # No batch norm or ReLU on the output: the target is a z-scored signal with negative values.
        self.to_signal = nn.Conv1d(cfg.channels[0], cfg.in_channels, kernel_size=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.from_code(code).view(code.shape[0], self.cfg.channels[-1], self.cfg.code_length)
        for block, upsample in zip(self.blocks, self.upsamples):
            x = block(upsample(x))
        return self.to_signal(x)


class ConvAutoencoder(nn.Module):
    """Encoder + decoder; forward returns the reconstruction, same shape as the input."""

    def __init__(self, cfg: CaeConfig):
        super().__init__()
        self.cfg = cfg
        self.input_length = cfg.window_length  # the training loop feeds (B, C, input_length) windows
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reset_layers(module: nn.Module) -> None:
    """Re-draw every layer of ``module`` as at construction, from torch's global RNG.

    A layer that re-initialises its own children (a residual block, whose scheme zero-inits
    its last BatchNorm gamma) is asked once and its children are left to it, so a network
    re-drawn here starts like a newly built one.
    """
    done: set[int] = set()
    for layer in module.modules():
        if layer is module or id(layer) in done or not hasattr(layer, "reset_parameters"):
            continue
        layer.reset_parameters()
        if any(child is not layer for child in layer.modules()):
            done.update(id(child) for child in layer.modules())


def init_encoder(encoder: Encoder, scheme: str) -> None:
    """Re-draw ``encoder``'s weights under a named scheme, from torch's global RNG (callers
    seed it in a forked RNG, see models/classifier.py).

    - ``"cae"``: the CAE's own scheme, as its encoder started pretraining: PyTorch's layer
      defaults, plus bn2's gamma at 0 in every block when ``cfg.zero_init_residual``. Right for
      a network that trains (the fine-tuned ``random`` arm), wrong for a frozen one: with
      ``zero_init_residual`` and no ``final_relu`` every residual branch outputs exactly 0 and
      the frozen encoder is an affine map whose code is near 0 (issue 16).
    - ``"standard"``: torchvision's ResNet initialisation (He et al. 2015) without zero-init
      residuals: every convolution (1x1 skip projections included) Kaiming-normal with
      ``mode="fan_out", nonlinearity="relu"``, every BatchNorm gamma 1 and beta 0 with fresh
      running statistics, the code's linear layer PyTorch's default. Every branch is live and
      the encoder is nonlinear: the frozen random control (``random_frozen``).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init_encoder: scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    if scheme == "cae":
        reset_layers(encoder)
        return
    for layer in encoder.modules():
        if isinstance(layer, nn.Conv1d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm1d):
            layer.reset_running_stats()
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            layer.reset_parameters()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
