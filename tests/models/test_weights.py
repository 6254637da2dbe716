import json
from dataclasses import replace

import pytest
import torch
from kedro.io import DatasetError

from ecg_transfer.datasets import PretrainedEncoderDataset
from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder
from ecg_transfer.models.weights import (
    check_card_inputs,
    check_pretrained_encoder,
    encoder_model_card,
    load_pretrained_encoder,
    preprocessing_card,
    save_pretrained_encoder,
)
from tests.tiny import TINY_CAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TINY_CAE


@pytest.fixture()
def saved(tmp_path):
    encoder = ConvAutoencoder(TINY).encoder
    weights, card = tmp_path / "encoder.pt", tmp_path / "encoder_card.json"
    save_pretrained_encoder(weights, card, encoder, TINY, {"data": "synthetic monitor corpus", "test_mse": 0.25})
    return encoder, weights, card


def test_weights_only_round_trip(saved):
    encoder, weights, card = saved
    plain = torch.load(weights, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in plain.values())
    loaded = load_pretrained_encoder(weights, card, TINY)
    expected = encoder.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_card_records_architecture_and_provenance(saved):
    _, _, card = saved
    content = json.loads(card.read_text())
    assert content["architecture"]["channels"] == [2, 2, 4, 4, 4, 4, 4, 4, 4]
    assert content["architecture"]["kernel_size"] == 19
    assert content["sampling_rate_hz"] == 250.0
    assert content["window_length"] == 256
    assert content["normalisation"] == "per-window z-score"
    assert content["test_mse"] == 0.25 and content["data"] == "synthetic monitor corpus"
    assert content["torch_version"] == torch.__version__ and "date" in content


def test_card_with_other_architecture_names_the_fields(saved):
    _, weights, card = saved
    with pytest.raises(ValueError, match=r"channels: card \[2, 2, 4.*bottleneck: card 60 vs configured 32"):
        load_pretrained_encoder(weights, card, replace(TINY, channels=(2,) * 9, bottleneck=32))


def test_tampered_weights_name_keys_and_shapes(saved):
    _, weights, card = saved
    state = torch.load(weights, weights_only=True)
    state.pop("blocks.0.bn1.weight")
    state["head.weight"] = torch.zeros(3)
    state["to_code.bias"] = torch.zeros(7)
    torch.save(state, weights)
    with pytest.raises(ValueError) as error:
        load_pretrained_encoder(weights, card, TINY)
    text = str(error.value)
    assert "missing keys ['blocks.0.bn1.weight']" in text
    assert "unexpected keys ['head.weight']" in text
    assert "to_code.bias: expected (60,), got (7,)" in text


def test_missing_file_and_non_tensor_payload(saved, tmp_path):
    _, weights, card = saved
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_pretrained_encoder(tmp_path / "nowhere.pt", card, TINY)
    torch.save({"obj": object()}, weights)
    with pytest.raises(ValueError, match="not a tensors-only state_dict"):
        load_pretrained_encoder(weights, card, TINY)


def test_saving_an_encoder_of_another_config_is_refused(tmp_path):
    encoder = ConvAutoencoder(TINY).encoder
    with pytest.raises(ValueError, match="does not match the given CaeConfig"):
        save_pretrained_encoder(tmp_path / "w.pt", tmp_path / "c.json", encoder, CaeConfig(), {})


def test_in_memory_card_and_check_agree_with_the_files(saved):
    """The Kedro path (datasets load the state and the card, the node checks them) accepts
    exactly what the file path accepts, and names the differing field otherwise."""
    encoder, weights, card_path = saved
    state = torch.load(weights, weights_only=True)
    card = json.loads(card_path.read_text())
    assert check_pretrained_encoder(state, card, TINY).keys() == encoder.state_dict().keys()
    fresh = encoder_model_card(encoder.state_dict(), TINY, {"data": "x"})
    assert fresh["architecture"] == card["architecture"] and fresh["n_parameters"] == card["n_parameters"]
    wider = replace(TINY, channels=(2, 2, 4, 4, 4, 4, 4, 4, 8))
    with pytest.raises(ValueError, match="channels"):
        check_pretrained_encoder(state, card, wider)
    with pytest.raises(ValueError, match="missing keys"):
        check_pretrained_encoder({k: v for k, v in list(state.items())[1:]}, card, TINY)
    with pytest.raises(ValueError, match="architecture"):
        check_pretrained_encoder(state, {"data": "no architecture"}, TINY)


@pytest.mark.parametrize(
    "deleted", [("sampling_rate_hz",), ("lead",), ("normalisation",), ("sampling_rate_hz", "lead", "normalisation")]
)
def test_a_card_that_does_not_state_its_inputs_is_refused_naming_the_file_and_fields(saved, deleted):
    """Issue 20 item 9: a card with its sampling rate, lead or normalisation deleted was taken
    for 250 Hz / II / z-score; now each path that reads a card refuses it."""
    _, weights, card_path = saved
    card = json.loads(card_path.read_text())
    for field in deleted:
        del card[field]
    card_path.write_text(json.dumps(card))
    named = "does not state " + ", ".join(deleted)
    with pytest.raises(ValueError, match=rf"{card_path}.*{named}"):
        load_pretrained_encoder(weights, card_path, TINY)
    with pytest.raises(DatasetError, match=rf"{card_path}.*{named}"):
        PretrainedEncoderDataset(str(weights), str(card_path)).load()
    state = torch.load(weights, weights_only=True)
    with pytest.raises(ValueError, match=rf"arm transfer.*{named}"):
        check_pretrained_encoder(state, card, TINY, source="arm transfer")
    with pytest.raises(ValueError, match=named):
        check_card_inputs(card, preprocessing_card(250.0, TINY.window_length, ["II"]), "arm transfer")


def test_a_card_stating_its_inputs_still_loads_and_is_compared(saved):
    _, weights, card_path = saved
    card = json.loads(card_path.read_text())
    check_card_inputs(card, preprocessing_card(250.0, TINY.window_length, ["MLII"]), "x")  # MLII is lead II
    with pytest.raises(ValueError, match="sampling_rate_hz: card 250.0 vs data 500.0"):
        check_card_inputs(card, preprocessing_card(500.0, TINY.window_length, ["II"]), "x")


def test_an_encoder_of_other_leads_is_refused_naming_both_lists(tmp_path):
    three = replace(TINY, in_channels=3)
    weights, card_path = tmp_path / "encoder.pt", tmp_path / "card.json"
    inputs = preprocessing_card(250.0, three.window_length, ["I,MLII,V1"])
    assert inputs["lead"] == "I,II,V1"  # each lead by its standard name, in channel order
    save_pretrained_encoder(weights, card_path, ConvAutoencoder(three).encoder, three, inputs)
    card = json.loads(card_path.read_text())
    assert card["architecture"]["in_channels"] == 3 and card["lead"] == "I,II,V1"
    load_pretrained_encoder(weights, card_path, three)
    check_card_inputs(card, preprocessing_card(250.0, 256, ["I,II,V1"]), "x")
    with pytest.raises(ValueError, match=r"leads \(in channel order\): encoder pretrained on \['I', 'II', 'V1'\], "
                                         r"data has \['V1', 'II', 'I'\]"):
        check_card_inputs(card, preprocessing_card(250.0, 256, ["V1,II,I"]), "x")
    with pytest.raises(ValueError, match=r"encoder pretrained on \['I', 'II', 'V1'\], data has \['II'\]"):
        check_card_inputs(card, preprocessing_card(250.0, 256, ["MLII"]), "x")
    with pytest.raises(ValueError, match="in_channels: card 3 vs configured 1"):
        load_pretrained_encoder(weights, card_path, TINY)


def test_a_one_lead_card_does_not_state_in_channels_and_still_loads(saved):
    _, weights, card_path = saved
    card = json.loads(card_path.read_text())
    assert "in_channels" not in card["architecture"]  # one-lead cards (and run keys) as before
    load_pretrained_encoder(weights, card_path, TINY)
