import pytest
import torch
from torch import nn

from ecg_transfer.models.cae import (
    LEGACY_CONFIG_FIELDS,
    CaeConfig,
    ConvAutoencoder,
    Encoder,
    ResidualBlock,
    SingleInputPointwiseConv1d,
    count_parameters,
)
from tests.tiny import TINY_CAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TINY_CAE


def _expected_parameter_count(cfg: CaeConfig) -> int:
    """Hand count: per block two bias-free convs + 2 BN (weight, bias) + 1x1 skip conv & BN on width change."""
    k = cfg.kernel_size

    def block(c_in, c_out):
        n = c_in * c_out * k + c_out * c_out * k + 4 * c_out
        if c_in != c_out:
            n += c_in * c_out + 2 * c_out
        return n

    widths_in = (1,) + cfg.channels[:-1]
    encoder = sum(block(a, b) for a, b in zip(widths_in, cfg.channels))
    encoder += cfg.channels[-1] * cfg.code_length * cfg.bottleneck + cfg.bottleneck
    mirrored = cfg.channels[::-1]
    decoder = sum(block(a, b) for a, b in zip(mirrored, mirrored[1:] + (cfg.channels[0],)))
    decoder += cfg.bottleneck * mirrored[0] * cfg.code_length + mirrored[0] * cfg.code_length
    decoder += cfg.channels[0] + 1  # the 1x1 output conv with bias
    return encoder + decoder, encoder


def test_default_shapes_and_bottleneck():
    model = ConvAutoencoder(CaeConfig())
    x = torch.randn(3, 1, 2048)
    assert model.encode(x).shape == (3, 60)
    assert model(x).shape == (3, 1, 2048)


def test_nine_residual_blocks_of_two_kernel19_stride1_convs():
    model = ConvAutoencoder(CaeConfig())
    for part, conv_type in ((model.encoder, nn.Conv1d), (model.decoder, nn.ConvTranspose1d)):
        blocks = [m for m in part.modules() if isinstance(m, ResidualBlock)]
        assert len(blocks) == 9
        for block in blocks:
            for conv in (block.conv1, block.conv2):
                assert type(conv) is conv_type
                assert conv.kernel_size == (19,) and conv.stride == (1,)
            assert isinstance(block.bn1, nn.BatchNorm1d) and isinstance(block.bn2, nn.BatchNorm1d)
            widths_change = block.conv1.in_channels != block.conv1.out_channels
            assert isinstance(block.skip, nn.Sequential) == widths_change
            if widths_change:
                assert block.skip[0].kernel_size == (1,)


def test_parameter_count_matches_hand_count():
    for cfg in (CaeConfig(), TINY):
        total, encoder = _expected_parameter_count(cfg)
        model = ConvAutoencoder(cfg)
        assert count_parameters(model) == total
        assert count_parameters(model.encoder) == encoder


def test_residual_block_adds_its_input():
    block = ResidualBlock(3, 3, 19, transposed=False).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # residual branch gives bn2(0) = bias 0 -> output relu(x)
    x = torch.randn(2, 3, 50)
    assert torch.allclose(block(x), torch.relu(x))


def test_block_without_final_relu_and_zero_init_starts_as_its_skip():
    block = ResidualBlock(3, 3, 19, transposed=True, final_relu=False, zero_init_residual=True).eval()
    assert torch.count_nonzero(block.bn2.weight) == 0
    x = torch.randn(2, 3, 50)
    assert torch.allclose(block(x), x)  # identity skip, no ReLU: negative values pass


def test_default_design_keeps_linear_skip_paths():
    cfg = CaeConfig()
    assert cfg.pooling == "avg" and cfg.upsampling == "linear"
    assert not cfg.final_relu and cfg.zero_init_residual
    assert cfg.code_length == 64  # 64 positions x 16 channels -> Linear(1024, 60)
    model = ConvAutoencoder(cfg)
    assert all(not block.final_relu for block in model.modules() if isinstance(block, ResidualBlock))
    assert all(isinstance(up, (nn.Upsample, nn.Identity)) for up in model.decoder.upsamples)
    assert model.decoder.upsamples[-1].mode == "linear"
    assert model.encoder.to_code.in_features == 16 * 64


def test_legacy_config_still_builds():
    cfg = CaeConfig(**LEGACY_CONFIG_FIELDS)
    model = ConvAutoencoder(cfg)
    assert cfg.code_length == 4
    assert all(block.final_relu for block in model.modules() if isinstance(block, ResidualBlock))
    assert model(torch.randn(2, 1, 2048)).shape == (2, 1, 2048)
    assert count_parameters(model) == 334_641


def test_tiny_config_round_trip_length():
    model = ConvAutoencoder(TINY)
    assert TINY.code_length == 16
    assert model(torch.randn(2, 1, 256)).shape == (2, 1, 256)


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(batch, 1, 256\)"):
        Encoder(TINY)(torch.randn(2, 1, 300))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": (4,) * 8}, "channels has 8 entries"),
        ({"kernel_size": 18}, "odd"),
        ({"pooling": "mean"}, "pooling"),
        ({"window_length": 2000}, "not divisible"),
        ({"pool_factors": (2,) * 8}, "pool_factors has 8"),
        ({"upsampling": "cubic"}, "upsampling"),
    ],
)
def test_invalid_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaeConfig(**kwargs)


def test_from_dict_refuses_unknown_keys_and_accepts_lists():
    cfg = CaeConfig.from_dict({"channels": [4, 8, 8, 16, 16, 16, 16, 16, 16], "pool_factors": [4, 4, 2, 1, 1, 1, 1, 1, 1]})
    assert cfg == CaeConfig()
    with pytest.raises(ValueError, match="chanels"):
        CaeConfig.from_dict({"chanels": [1]})


def test_single_input_pointwise_conv_equals_conv1d():
    fast = SingleInputPointwiseConv1d(5)
    reference = nn.Conv1d(1, 5, 1, bias=False)
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(3, 1, 40)
    assert torch.allclose(fast(x), reference(x), atol=1e-6)
    assert isinstance(Encoder(CaeConfig()).blocks[0].skip[0], SingleInputPointwiseConv1d)


def test_init_encoder_schemes():
    """"cae" re-draws the encoder as construction did (zero-init residual included);
    "standard" is torchvision's ResNet init: He-normal convolutions, BN gamma 1 and beta 0."""
    from ecg_transfer.models.cae import init_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        fresh = Encoder(TINY)
        encoder = Encoder(TINY)
        torch.manual_seed(11)
        init_encoder(encoder, "cae")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in encoder.state_dict().items())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init_encoder(encoder, "standard")
    wide = encoder.blocks[-1].conv1.weight.detach()  # (out, in, k): fan_out = out * k
    expected_sd = (2.0 / (wide.shape[0] * wide.shape[2])) ** 0.5
    assert 0.6 * expected_sd < float(wide.std()) < 1.4 * expected_sd
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_encoder(encoder, "xavier")


def test_c_input_channels_are_encoded_and_reconstructed_and_the_data_decides_them():
    from dataclasses import replace

    from ecg_transfer.models.cae import with_channel_axis

    three = replace(TINY_CAE, in_channels=3)
    model = ConvAutoencoder(three).eval()
    x = torch.randn(2, 3, TINY_CAE.window_length)
    assert model(x).shape == x.shape and model.encode(x).shape == (2, TINY_CAE.bottleneck)
    with pytest.raises(ValueError, match=r"Encoder expects \(batch, 3, 256\)"):
        model(torch.randn(2, 1, TINY_CAE.window_length))
    assert with_channel_axis(torch.zeros(4, 256)).shape == (4, 1, 256)
    assert with_channel_axis(torch.zeros(4, 3, 256)).shape == (4, 3, 256)

    class Store:
        n_channels = 3

    assert CaeConfig.for_windows({"window_length": 256}, Store()).in_channels == 3
    assert CaeConfig.for_windows({"window_length": 256}, object()).in_channels == 1  # one-lead stores
    with pytest.raises(ValueError, match="pretraining.cae.in_channels is 1 but the windows hold 3 lead"):
        CaeConfig.for_windows({"window_length": 256, "in_channels": 1}, Store())
