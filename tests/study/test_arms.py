import pytest

from ecg_transfer.study.arms import arm_registry, check_arm_methods

ARMS = {
    "random": {"init": "random", "freeze": False, "input": "window", "label": "random init", "colour": "tab:grey"},
    "image": {"init": "pretrained", "freeze": True, "input": "spectrogram"},
    "transfer": {"init": "pretrained", "freeze": False, "input": "window"},
}


def test_the_registry_keeps_the_yaml_order_and_looks_arms_up():
    registry = arm_registry(ARMS)
    assert registry.names == ("random", "image", "transfer")
    assert registry["transfer"].uses_encoder and not registry["image"].uses_encoder
    assert not registry["random"].uses_encoder
    assert registry.label("random") == "random init" and registry.label("transfer") == "transfer"
    assert registry.colour("random") == "tab:grey" and registry.colour("nope") is None
    assert registry.ordered({"transfer", "zeta", "random"}) == ["random", "transfer", "zeta"]
    with pytest.raises(KeyError, match="unknown arm 'nope'"):
        registry["nope"]


def test_arm_specs_are_checked():
    with pytest.raises(ValueError, match="init must be one of"):
        arm_registry({"x": {"init": "image net", "freeze": False, "input": "window"}})
    with pytest.raises(ValueError, match="only window arms read"):
        arm_registry({"x": {"init": "simclr", "freeze": True, "input": "spectrogram"}})
    with pytest.raises(ValueError, match="sets how a random encoder starts"):
        arm_registry({"x": {"init": "simclr", "freeze": True, "input": "window", "init_scheme": "standard"}})
    with pytest.raises(ValueError, match="frozen ImageNet CNN"):
        arm_registry({"x": {"init": "random", "freeze": False, "input": "spectrogram"}})
    with pytest.raises(ValueError, match="missing \\['freeze'\\]"):
        arm_registry({"x": {"init": "random", "input": "window"}})
    with pytest.raises(TypeError, match="study.arms.x.freeze: expected true or false, got 'no'; or expected an integer"):
        arm_registry({"x": {"init": "random", "freeze": "no", "input": "window"}})
    with pytest.raises(TypeError, match="study.arms.x.label: expected a string"):
        arm_registry({"x": {"init": "random", "freeze": False, "input": "window", "label": ["a"]}})
    with pytest.raises(ValueError, match="lower-case"):
        arm_registry({"Bad-Name": {"init": "random", "freeze": False, "input": "window"}})


def test_an_arm_names_its_encoder_and_an_unknown_method_is_an_error_naming_the_known_ones():
    from ecg_transfer.training.pretext_methods import methods_from_params

    registry = arm_registry({**ARMS, "simclr_frozen": {"init": "simclr", "freeze": True, "input": "window"}})
    spec = registry["simclr_frozen"]
    assert spec.uses_encoder and spec.pretext_method == "simclr"
    assert registry["transfer"].uses_encoder and registry["transfer"].pretext_method is None
    assert not registry["random"].uses_encoder and registry["image"].pretext_method is None
    methods = methods_from_params({"cae": {"task": "reconstruct"}, "simclr": {"task": "contrastive"},
                                   "masked": {"task": "masked"}})
    check_arm_methods(registry, methods)  # known: no error
    with pytest.raises(ValueError, match=r"study.arms.simclr_frozen.init: 'simclr' .*has \['masked'\]"):
        check_arm_methods(registry, methods_from_params({"cae": {"task": "reconstruct"}, "masked": {"task": "masked"}}))
    cae_by_name = arm_registry({"x": {"init": "cae", "freeze": False, "input": "window"}})
    with pytest.raises(ValueError, match="arms name it init: pretrained"):
        check_arm_methods(cae_by_name, methods)


def test_comparisons_naming_an_unknown_arm_are_an_error_listing_the_known_ones():
    registry = arm_registry(ARMS)
    assert registry.check_comparisons([["transfer", "random"]]) == (("transfer", "random"),)
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['nope'\].*\['random', 'image', 'transfer'\]"):
        registry.check_comparisons([["random", "nope"]])
    with pytest.raises(ValueError, match="with itself"):
        registry.check_comparisons([["random", "random"]])


def test_a_random_window_arm_names_its_init_scheme():
    registry = arm_registry({
        **ARMS,
        "random_frozen": {"init": "random", "init_scheme": "standard", "freeze": True, "input": "window"},
    })
    assert registry["random_frozen"].init_scheme == "standard"
    assert registry["random"].init_scheme == "cae"  # the default: as the CAE's encoder started
    with pytest.raises(ValueError, match="init_scheme must be one of"):
        arm_registry({"x": {"init": "random", "init_scheme": "he", "freeze": True, "input": "window"}})
    with pytest.raises(ValueError, match="sets how a random encoder starts"):
        arm_registry({"x": {"init": "pretrained", "init_scheme": "standard", "freeze": True, "input": "window"}})


def test_the_bundled_study_s_frozen_random_control_uses_the_standard_scheme():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "base" / "parameters_study.yml"
    arms = arm_registry(yaml.safe_load(conf.read_text())["study"]["arms"])
    assert arms["random_frozen"].init_scheme == "standard" and arms["random"].init_scheme == "cae"


def test_head_and_partial_freeze_are_one_field_each():
    registry = arm_registry({
        "linear": {"init": "random", "freeze": False, "input": "window", "head": "linear"},
        "partial": {"init": "pretrained", "freeze": 3, "input": "window"},
    })
    assert registry["linear"].head == "linear" and registry["partial"].head == "mlp"
    assert registry["partial"].result_spec() == {"init": "pretrained", "freeze": 3, "input": "window", "head": "mlp",
                                                 "init_scheme": "cae"}
    with pytest.raises(ValueError, match="head must be one of \\('mlp', 'linear'\\)"):
        arm_registry({"x": {"init": "random", "freeze": False, "input": "window", "head": "deep"}})
    with pytest.raises(ValueError, match="or N >= 1"):
        arm_registry({"x": {"init": "random", "freeze": 0, "input": "window"}})
    with pytest.raises(ValueError, match="frozen ImageNet CNN"):
        arm_registry({"x": {"init": "pretrained", "freeze": 2, "input": "spectrogram"}})


def test_label_and_colour_are_not_part_of_what_an_arm_is():
    plain = arm_registry({"a": {"init": "random", "freeze": False, "input": "window"}})["a"]
    dressed = arm_registry({"a": {"init": "random", "freeze": False, "input": "window", "label": "A", "colour": "red"}})["a"]
    assert plain.result_spec() == dressed.result_spec()


def test_an_arm_set_to_null_is_left_out():
    """Environments merge into conf/base: `image: null` is how conf/pretext drops a base arm."""
    registry = arm_registry({**ARMS, "image": None})
    assert "image" not in registry and "random" in registry
