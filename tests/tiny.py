"""The tiny CAE architecture the model and training tests share: the paper's nine residual
blocks and kernel 19 on 256-sample windows with a few channels, so a test trains in seconds."""

from ecg_transfer.models.cae import CaeConfig

TINY_CAE = CaeConfig(window_length=256, channels=(2, 2, 4, 4, 4, 4, 4, 4, 4), pool_factors=(2, 2, 2, 2, 1, 1, 1, 1, 1))
