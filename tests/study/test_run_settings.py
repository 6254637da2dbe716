import pytest

from ecg_transfer.study.run_settings import check_arm_settings, check_histories_match, describe_run
from tests.study.histories import make_arm_settings, make_histories

ARMS = ["random", "image", "transfer"]


def test_equal_settings_combine_into_the_run_description():
    settings = check_arm_settings([make_arm_settings(a) for a in ARMS], ARMS)
    assert settings["arms"] == ARMS and settings["n_trials"] == 3 and settings["fractions"] == [1.0, 0.5]
    assert settings["fingerprints"]["random"] == {"run": "run-random", "encoder": None}
    run = describe_run(settings)
    assert run["epochs"] == 6 and run["classes"] == ["SB", "SR", "AFIB"]


def test_a_rerun_arm_with_other_parameters_is_refused_naming_arms_and_settings():
    # issue 13: finetuning re-run with 3 epochs and 2 trials, the image arm left at 6 and 3
    settings = [
        make_arm_settings("random", n_trials=2, training={"epochs": 3}),
        make_arm_settings("image"),
        make_arm_settings("transfer", n_trials=2, training={"epochs": 3}),
    ]
    with pytest.raises(ValueError, match="not made under one study configuration") as error:
        check_arm_settings(settings, ARMS)
    message = str(error.value)
    assert "n_trials differs: 2 (random, transfer); 3 (image)" in message
    assert "training.epochs differs: 3 (random, transfer); 6 (image)" in message


@pytest.mark.parametrize(
    "key, value",
    [("fractions", [1.0]), ("classes", ["A", "B"]), ("bootstrap_fingerprint", "other"),
     ("labelled_fingerprint", "other")],
)
def test_every_shared_setting_is_checked(key, value):
    settings = [make_arm_settings("random"), make_arm_settings("image", **{key: value})]
    with pytest.raises(ValueError, match=f"{key} differs"):
        check_arm_settings(settings, ["random", "image"])


def test_settings_of_another_arm_or_spec_are_refused():
    with pytest.raises(ValueError, match="describes the arm 'image'"):
        check_arm_settings([make_arm_settings("image")], ["random"])
    specs = {"transfer": {"init": "pretrained", "freeze": True, "input": "window"}}
    with pytest.raises(ValueError, match="transfer ran as .* but study.arms now says"):
        check_arm_settings([make_arm_settings("transfer")], ["transfer"], specs)
    with pytest.raises(ValueError, match="2 arm_settings for the 1 arms"):
        check_arm_settings([make_arm_settings("random")] * 2, ["random"])
    incomplete = make_arm_settings("random")
    del incomplete["classes"]
    with pytest.raises(ValueError, match="lacks \\['classes'\\]"):
        check_arm_settings([incomplete], ["random"])


def test_histories_must_hold_the_settings_runs():
    settings = check_arm_settings([make_arm_settings(a) for a in ARMS], ARMS)
    check_histories_match(make_histories(arms=ARMS), settings)
    with pytest.raises(ValueError, match="image: trials \\[1, 2\\], its settings say 1..3"):
        check_histories_match(make_histories(arms=ARMS).query("not (arm == 'image' and trial == 3)"), settings)
    with pytest.raises(ValueError, match="transfer: no runs"):
        check_histories_match(make_histories(arms=["random", "image"]), settings)
    with pytest.raises(ValueError, match="fractions"):
        check_histories_match(make_histories(arms=ARMS, fractions=(1.0,)), settings)


def test_a_parameter_group_is_compared_among_the_arms_that_read_it():
    head = {"finetuning.head": {"hidden": 64, "dropout": 0.2}}
    settings = [
        make_arm_settings("random", parameters=head),
        make_arm_settings("image", parameters={"image_transfer.head": {"hidden": 16, "dropout": 0.2}}),
        make_arm_settings("transfer", parameters={"finetuning.head": {"hidden": 8, "dropout": 0.2}}),
    ]
    with pytest.raises(ValueError, match=r"finetuning\.head\.hidden differs: 64 \(random\); 8 \(transfer\)") as error:
        check_arm_settings(settings, ARMS)
    assert "image_transfer" not in str(error.value)  # read by one arm only: nothing to compare
    settings[2]["parameters"] = head
    check_arm_settings(settings, ARMS)


def test_arms_from_two_encoders_are_refused_and_random_arms_have_none():
    settings = [make_arm_settings("random"), make_arm_settings("image", encoder_fingerprint=None),
                make_arm_settings("transfer", encoder_fingerprint="enc1")]
    check_arm_settings(settings, ARMS)
    both = [make_arm_settings("transfer"), make_arm_settings("transfer_frozen", encoder_fingerprint="enc1")]
    with pytest.raises(ValueError, match=r"the pretrained encoder differs \(fingerprint\): \"enc0\" \(transfer\); \"enc1\" \(transfer_frozen\)"):
        check_arm_settings(both, ["transfer", "transfer_frozen"])


def test_settings_written_before_parameters_were_recorded_are_refused():
    old = make_arm_settings("random")
    del old["parameters"]
    with pytest.raises(ValueError, match="lacks \\['parameters'\\]; re-run the arm"):
        check_arm_settings([old], ["random"])


def test_a_spec_that_freezes_one_block_is_not_the_spec_that_freezes_all():
    ran = make_arm_settings("transfer")
    ran["spec"] = {"init": "pretrained", "freeze": True, "input": "window", "head": "mlp"}
    now = {"transfer": {"init": "pretrained", "freeze": 1, "input": "window", "head": "mlp"}}
    with pytest.raises(ValueError, match="transfer ran as .*'freeze': True.* but study.arms now says .*'freeze': 1"):
        check_arm_settings([ran], ["transfer"], now)
    old = make_arm_settings("transfer")  # written before arms had a head: the default head
    check_arm_settings([old], ["transfer"], {"transfer": {**old["spec"], "head": "mlp"}})
