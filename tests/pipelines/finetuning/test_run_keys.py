"""What a run's key covers (issue 17 item 5, issue 20 item 5): settings marked cosmetic on their
config, and the project folder's place, reuse every finished run; a setting that changes
results retrains; the statistics refuse arms whose result-changing settings differ."""

from __future__ import annotations

import shutil

import pytest

from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline
from ecg_transfer.study.run_settings import check_arm_settings
from tests.pipelines.conftest import run, shrunk_parameters
from tests.pipelines.finetuning.test_pipeline import _catalog, _encoder, _one_sample
from tests.pipelines.pretraining.test_pipeline import PRETRAIN
from tests.pipelines.pretraining.test_pipeline import _catalog as _pretraining_catalog

ARMS = ("random", "transfer", "transfer_frozen")
PIPELINE = create_pipeline().only_nodes(*(f"{arm}.train_arm" for arm in ARMS))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained(tiny_windows, root, params, corpus="/projects/study/data/05_model_input/unlabelled_windows"):
    """Run the three window arms on one sample; (runs trained now, runs reused, arm settings)."""
    state, card = _encoder(params)
    catalog = _catalog(tiny_windows, root, params, weights=state, card={**card, "data": {"corpus": corpus}},
                       bootstrap_samples=_one_sample(tiny_windows))
    run(PIPELINE, catalog)
    tracker = catalog.load("run_tracker")
    return len(tracker.live), len(tracker.whole), {arm: catalog.load(f"{arm}.arm_settings") for arm in ARMS}


def _changed(params, group, key, value):
    params = shrunk_parameters() if params is None else params
    target = params["finetuning"] if group == "finetuning" else params["finetuning"][group]
    target[key] = value
    return params


def test_cosmetic_settings_and_a_moved_project_folder_reuse_every_finished_run(tiny_windows, tmp_path):
    params = shrunk_parameters()
    trained, _, first = _trained(tiny_windows, tmp_path / "project", params)
    assert trained == len(ARMS)
    # The test parameters have progress off and one thread: turn the bar on, use two threads.
    assert params["finetuning"]["progress"] is False and params["finetuning"]["training"]["num_threads"] == 1
    for change in (("finetuning", "progress", True), ("training", "num_threads", 2)):
        trained, reused, settings = _trained(tiny_windows, tmp_path / "project", _changed(None, *change))
        assert (trained, reused) == (0, len(ARMS)), change
        assert settings == first, change  # nothing cosmetic is recorded, so nothing differs
    shutil.copytree(tmp_path / "project", tmp_path / "moved")
    trained, reused, settings = _trained(tiny_windows, tmp_path / "moved", params, corpus="/elsewhere/unlabelled")
    assert (trained, reused) == (0, len(ARMS))
    assert {arm: s["run_fingerprint"] for arm, s in settings.items()} == {
        arm: s["run_fingerprint"] for arm, s in first.items()
    }


def test_a_change_of_learning_rate_retrains(tiny_windows, tmp_path):
    params = shrunk_parameters()
    _trained(tiny_windows, tmp_path, params)
    trained, reused, _ = _trained(tiny_windows, tmp_path, _changed(None, "training", "lr", 0.001))
    assert (trained, reused) == (len(ARMS), 0)


def test_one_window_per_record_and_epoch_retrains_and_the_statistics_refuse_a_mix(tiny_windows, tmp_path):
    params = shrunk_parameters()
    _, _, first = _trained(tiny_windows, tmp_path, params)
    trained, reused, changed = _trained(tiny_windows, tmp_path,
                                        _changed(None, "finetuning", "windows_per_epoch", "one_per_record"))
    assert (trained, reused) == (len(ARMS), 0)
    with pytest.raises(ValueError, match=r"finetuning\.windows_per_epoch\.windows_per_epoch differs"):
        check_arm_settings([first["random"], changed["transfer"], first["transfer_frozen"]], ARMS)


def test_cosmetic_pretraining_settings_reuse_the_finished_cae(tiny_windows, tmp_path):
    params = shrunk_parameters()
    first = run(PRETRAIN, _pretraining_catalog(tiny_windows, tmp_path, params))
    assert len(first.load("run_tracker").live) == 1
    params["pretraining"]["progress"] = not params["pretraining"]["progress"]
    params["pretraining"]["training"]["num_threads"] = 2
    again = run(PRETRAIN, _pretraining_catalog(tiny_windows, tmp_path, params))
    assert again.load("run_tracker").live == [] and len(again.load("run_tracker").whole) == 1
    params["pretraining"]["training"]["lr"] = 0.001
    other = run(PRETRAIN, _pretraining_catalog(tiny_windows, tmp_path, params))
    assert len(other.load("run_tracker").live) == 1


def test_statistics_refuse_an_arm_rerun_with_another_head(tiny_windows, tmp_path):
    """Issue 20 item 5: only `transfer` re-run with finetuning.head.hidden=8, then statistics."""
    params = shrunk_parameters()
    params["finetuning"]["head"]["hidden"] = 4
    _, _, settings = _trained(tiny_windows, tmp_path, params)
    check_arm_settings([settings[arm] for arm in ARMS], ARMS)
    params["finetuning"]["head"]["hidden"] = 8
    catalog = _catalog(tiny_windows, tmp_path, params, bootstrap_samples=_one_sample(tiny_windows))
    rerun = run(PIPELINE.only_nodes("transfer.train_arm"), catalog).load("transfer.arm_settings")
    with pytest.raises(ValueError, match=r"finetuning\.head\.hidden differs: 4 \(random, transfer_frozen\); 8 \(transfer\)"):
        check_arm_settings([settings["random"], rerun, settings["transfer_frozen"]], ARMS)


def test_statistics_refuse_transfer_arms_trained_from_two_encoders(tiny_windows, tmp_path):
    params = shrunk_parameters()
    _, _, settings = _trained(tiny_windows, tmp_path, params)
    state, card = _encoder(params)
    other = {k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}
    catalog = _catalog(tiny_windows, tmp_path, params, weights=other, bootstrap_samples=_one_sample(tiny_windows))
    rerun = run(PIPELINE.only_nodes("transfer.train_arm"), catalog).load("transfer.arm_settings")
    with pytest.raises(ValueError, match=r"pretrained encoder differs.*\(transfer\).*\(transfer_frozen\)"):
        check_arm_settings([settings["random"], rerun, settings["transfer_frozen"]], ARMS)
