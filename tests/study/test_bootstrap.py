import numpy as np
import pandas as pd
import pytest

from ecg_transfer.study.bootstrap import (
    bootstrap_sample_with_redraws,
    draw_all_samples,
    draw_bootstrap_sample,
    stratified_counts,
    trial_seeds,
)

# Shaped like the Chapman set's tail: two tiny classes beside large ones.
LABELS = np.array(["SB"] * 60 + ["SR"] * 30 + ["AFIB"] * 20 + ["AVRT"] * 2 + ["SAAWR"] * 1)


def test_trial_seeds_reproducible_distinct_and_match_seedsequence():
    seeds = trial_seeds(42, 5)
    assert seeds == trial_seeds(42, 5)
    assert len(set(seeds)) == 5
    assert seeds != trial_seeds(43, 5)
    expected = [int(c.generate_state(1, dtype=np.uint32)[0]) for c in np.random.SeedSequence(42).spawn(5)]
    assert seeds == expected
    # the first trials do not depend on how many trials follow
    assert trial_seeds(42, 3) == seeds[:3]


def test_stratified_counts_hand_example():
    # quotas for 10 of [6, 3, 1] out of 10: exactly 6, 3, 1
    assert stratified_counts(np.array([6, 3, 1]), 10).tolist() == [6, 3, 1]
    # 5 of [60, 30, 9, 1]: quotas 3, 1.5, 0.45, 0.05 -> floors raised to 1 give 3, 1, 1, 1 = 6;
    # only class 0 holds more than 1, so it pays the surplus.
    assert stratified_counts(np.array([60, 30, 9, 1]), 5).tolist() == [2, 1, 1, 1]
    # largest remainder fills the deficit: 7 of [5, 3, 2] -> quotas 3.5, 2.1, 1.4 -> 3,2,1 + 1 to class 0
    assert stratified_counts(np.array([5, 3, 2]), 7).tolist() == [4, 2, 1]


def test_stratified_counts_too_small_sample_raises():
    with pytest.raises(ValueError, match="cannot hold all 3 classes"):
        stratified_counts(np.array([5, 3, 2]), 2)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.05])
def test_sample_size_every_class_present_and_in_range(fraction):
    positions = draw_bootstrap_sample(LABELS, fraction, seed=3)
    assert positions.size == round(fraction * LABELS.size)
    assert positions.min() >= 0 and positions.max() < LABELS.size
    assert set(LABELS[positions]) == set(LABELS)


def test_full_fraction_keeps_class_counts_exactly():
    positions = draw_bootstrap_sample(LABELS, 1.0, seed=1)
    drawn = pd.Series(LABELS[positions]).value_counts().sort_index()
    original = pd.Series(LABELS).value_counts().sort_index()
    pd.testing.assert_series_equal(drawn, original)


def test_with_replacement_repeats_positions():
    positions = draw_bootstrap_sample(LABELS, 1.0, seed=1)
    assert np.unique(positions).size < positions.size


def test_same_fraction_and_seed_same_sample_else_different():
    a = draw_bootstrap_sample(LABELS, 0.5, seed=11)
    np.testing.assert_array_equal(a, draw_bootstrap_sample(LABELS, 0.5, seed=11))
    assert not np.array_equal(a, draw_bootstrap_sample(LABELS, 0.5, seed=12))
    # a different fraction with the same trial seed draws independently
    b = draw_bootstrap_sample(LABELS, 0.25, seed=11)
    assert not np.array_equal(a[: b.size], b)


def test_integer_labels_work_and_no_redraws_needed():
    ints = np.repeat(np.arange(5), [60, 30, 20, 2, 1])
    positions, redraws = bootstrap_sample_with_redraws(ints, 0.25, seed=0)
    assert redraws == 0
    assert set(ints[positions]) == set(range(5))


def test_impossible_sample_raises_clear_error():
    with pytest.raises(ValueError, match="cannot hold all 5 classes"):
        draw_bootstrap_sample(LABELS, 0.02, seed=0)  # round(0.02 * 113) = 2 < 5 classes


@pytest.mark.parametrize(
    "labels, fraction, match",
    [
        (LABELS, 0.0, "fraction"),
        (LABELS, 1.5, "fraction"),
        (np.array([]), 0.5, "empty"),
        (np.array(["SB", None, "SR"], dtype=object), 1.0, "missing"),
        (LABELS.reshape(1, -1), 1.0, "1-D"),
    ],
)
def test_bad_input_raises(labels, fraction, match):
    with pytest.raises(ValueError, match=match):
        draw_bootstrap_sample(labels, fraction, seed=0)


def test_draw_all_samples_long_format_matches_single_draws():
    table = draw_all_samples(LABELS, (1.0, 0.25), n_trials=3, base_seed=7)
    assert list(table.columns) == ["fraction", "trial", "seed", "position"]
    sizes = table.groupby(["fraction", "trial"]).size()
    assert sizes.loc[(1.0, 1)] == LABELS.size and sizes.loc[(0.25, 3)] == round(0.25 * LABELS.size)
    seeds = trial_seeds(7, 3)
    for (fraction, trial), rows in table.groupby(["fraction", "trial"]):
        assert rows["seed"].nunique() == 1 and rows["seed"].iloc[0] == seeds[trial - 1]
        np.testing.assert_array_equal(
            rows["position"].to_numpy(), draw_bootstrap_sample(LABELS, fraction, seeds[trial - 1])
        )
    pd.testing.assert_frame_equal(table, draw_all_samples(LABELS, (1.0, 0.25), 3, 7))


def test_draw_all_samples_rejects_repeated_fractions():
    with pytest.raises(ValueError, match="repeat"):
        draw_all_samples(LABELS, (0.5, 0.5), n_trials=2, base_seed=0)


def test_pandas_string_series_gives_the_same_sample_as_numpy():
    series = pd.Series(LABELS, dtype="string")
    np.testing.assert_array_equal(
        draw_bootstrap_sample(series, 0.5, seed=5), draw_bootstrap_sample(LABELS, 0.5, seed=5)
    )


def test_one_window_per_record_gives_exactly_the_window_level_samples():
    records = np.array([f"rec{i}" for i in range(LABELS.size)], dtype=object)
    for fraction in (1.0, 0.5, 0.25):
        np.testing.assert_array_equal(
            draw_bootstrap_sample(LABELS, fraction, seed=9, records=records),
            draw_bootstrap_sample(LABELS, fraction, seed=9),
        )
    pd.testing.assert_frame_equal(
        draw_all_samples(LABELS, (1.0, 0.25), 3, 7, records=records), draw_all_samples(LABELS, (1.0, 0.25), 3, 7)
    )


def _windowed(n_windows=3):
    """Every record of LABELS cut into n_windows windows, the windows shuffled in the split."""
    labels = np.repeat(LABELS, n_windows)
    records = np.repeat([f"rec{i}" for i in range(LABELS.size)], n_windows).astype(object)
    order = np.random.default_rng(0).permutation(labels.size)
    return labels[order], records[order]


def test_records_travel_with_all_their_windows():
    labels, records = _windowed(3)
    positions = draw_bootstrap_sample(labels, 0.5, seed=2, records=records)
    drawn = pd.Series(records[positions]).value_counts()
    assert (drawn % 3 == 0).all()  # a record drawn k times brings its 3 windows k times
    assert int((drawn // 3).sum()) == round(0.5 * LABELS.size)  # the sample size counts records
    assert set(labels[positions]) == set(LABELS)
    # the record-level draw is the draw over records (numbered by their first window), expanded
    names, first = np.unique(records, return_index=True)
    in_order = names[np.argsort(first)]
    per_record = draw_bootstrap_sample(labels[np.sort(first)], 0.5, seed=2)
    expected = pd.Series(in_order[per_record]).value_counts().sort_index() * 3
    pd.testing.assert_series_equal(drawn.sort_index(), expected, check_names=False)


def test_a_record_with_two_labels_is_refused():
    labels, records = _windowed(2)
    labels = labels.copy()
    first = np.flatnonzero(records == "rec0")
    labels[first[0]] = "SR" if labels[first[1]] != "SR" else "SB"
    with pytest.raises(ValueError, match="rec0.*several labels"):
        draw_bootstrap_sample(labels, 0.5, seed=0, records=records)
    with pytest.raises(ValueError, match="every training window"):
        draw_bootstrap_sample(LABELS, 0.5, seed=0, records=np.array(["a", "b"], dtype=object))


def test_sample_sizes_count_unique_records():
    from ecg_transfer.study.bootstrap import sample_sizes

    table = draw_all_samples(LABELS, (1.0, 0.5), n_trials=4, base_seed=3)
    sizes = sample_sizes(table, [f"rec{i}" for i in range(LABELS.size)])
    assert sizes["fraction"].tolist() == [1.0, 0.5]
    full = sizes.iloc[0]
    assert full["records_drawn_mean"] == LABELS.size and full["training_records"] == LABELS.size
    per_trial = [np.unique(rows["position"]).size for _, rows in table[table["fraction"] == 1.0].groupby("trial")]
    assert full["unique_records_mean"] == pytest.approx(np.mean(per_trial))
    assert 0.5 < full["unique_share"] < 0.75  # about 63 % at 100 %
    labels, records = _windowed(3)
    windowed = draw_all_samples(labels, (0.5,), n_trials=2, base_seed=3, records=records)
    sizes = sample_sizes(windowed, records).iloc[0]
    assert sizes["records_drawn_mean"] == round(0.5 * LABELS.size)
    assert sizes["windows_mean"] == 3 * round(0.5 * LABELS.size)
    assert sizes["training_records"] == LABELS.size


def test_one_record_per_patient_gives_exactly_todays_samples():
    # Issue 16 item 2: the bundled data has one record per patient, so its samples must not move.
    labels, records = _windowed(3)
    patients = np.array([f"pat_{r}" for r in records], dtype=object)
    for fraction in (1.0, 0.5, 0.25):
        np.testing.assert_array_equal(
            draw_bootstrap_sample(labels, fraction, seed=4, records=records, patients=patients),
            draw_bootstrap_sample(labels, fraction, seed=4, records=records),
        )
    pd.testing.assert_frame_equal(
        draw_all_samples(labels, (1.0, 0.25), 3, 7, records=records, patients=patients),
        draw_all_samples(labels, (1.0, 0.25), 3, 7, records=records),
    )


def _patients_with_records(per_patient=5, windows=2):
    """Each record of LABELS belongs to patient i // per_patient; records give ``windows`` windows."""
    labels = np.repeat(LABELS, windows)
    records = np.repeat([f"rec{i}" for i in range(LABELS.size)], windows).astype(object)
    patients = np.repeat([f"pat{i // per_patient}" for i in range(LABELS.size)], windows).astype(object)
    return labels, records, patients


def test_a_drawn_patient_brings_all_their_records():
    labels, records, patients = _patients_with_records(per_patient=5, windows=2)
    positions = draw_bootstrap_sample(labels, 1.0, seed=3, records=records, patients=patients)
    drawn = pd.Series(patients[positions]).value_counts()
    sizes = pd.Series(patients).value_counts()
    times = drawn / sizes.loc[drawn.index]
    assert (times == times.round()).all()  # every drawn patient comes with all their windows, k times
    n_patients = pd.unique(patients).size
    assert int(times.sum()) == n_patients  # the sample size counts patients
    # Patients mix labels here (records of several classes); a patient counts in the stratum
    # of their most frequent label, yet every class of the split is in the sample.
    assert set(labels[positions]) == set(LABELS)
    assert not np.array_equal(positions, draw_bootstrap_sample(labels, 1.0, seed=3, records=records))


def test_patient_stratum_is_the_most_frequent_label():
    from ecg_transfer.study.bootstrap import _stratum_labels

    labels = np.array(["B", "A", "A", "C", "C", "B", "B"], dtype=object)
    codes = np.array([0, 0, 0, 1, 1, 2, 2])
    # patient 0: A twice; patient 1: C; patient 2: B. Ties go to the first in sorted order.
    assert _stratum_labels(labels, codes).tolist() == ["A", "C", "B"]
    assert _stratum_labels(np.array(["B", "A"], dtype=object), np.array([0, 0])).tolist() == ["A"]


def test_missing_patient_ids_are_refused():
    labels, records, patients = _patients_with_records()
    patients = patients.copy()
    patients[3] = None
    with pytest.raises(ValueError, match="patients holds missing patient ids"):
        draw_bootstrap_sample(labels, 0.5, seed=0, records=records, patients=patients)


def test_sample_sizes_count_patients_drawn():
    from ecg_transfer.study.bootstrap import sample_sizes

    labels, records, patients = _patients_with_records(per_patient=5, windows=2)
    samples = draw_all_samples(labels, (1.0, 0.5), n_trials=3, base_seed=1, records=records, patients=patients)
    sizes = sample_sizes(samples, records, patients).set_index("fraction")
    n_patients = pd.unique(patients).size
    assert sizes.loc[1.0, "patients_drawn_mean"] == n_patients and sizes.loc[0.5, "patients_drawn_mean"] == round(0.5 * n_patients)
    assert sizes.loc[1.0, "training_patients"] == n_patients and sizes.loc[1.0, "training_records"] == LABELS.size
    full = samples[samples["fraction"] == 1.0]
    unique = np.mean([pd.unique(patients[rows["position"]]).size for _, rows in full.groupby("trial")])
    assert sizes.loc[1.0, "unique_patients_mean"] == pytest.approx(unique)
    assert sizes.loc[1.0, "unique_share"] == pytest.approx(unique / n_patients)
    # without patient ids every record is its own patient
    plain = sample_sizes(samples, records).set_index("fraction")
    assert (plain["patients_drawn_mean"] == plain["records_drawn_mean"]).all()


def test_the_finetuning_node_draws_patients_from_the_labelled_index(tmp_path):
    # Issue 16 item 2: the pipeline's samples resample patients (a patient here has 3 records).
    from ecg_transfer.pipelines.finetuning.nodes import draw_bootstrap_samples
    from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter

    n = 60
    index = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i // 3}" for i in range(n)],
        "label": [("SB", "SR")[(i // 3) % 2] for i in range(n)], "split": "train",
    })
    with WindowStoreWriter(tmp_path / "store") as writer:
        writer.append(np.zeros((n, 8), dtype=np.float32), index)
    samples = draw_bootstrap_samples(WindowStore(tmp_path / "store"),
                                     {"fractions": [1.0], "n_trials": 3, "base_seed": 1})
    patients = index["patient_id"].to_numpy(dtype=object)
    for _, rows in samples.groupby("trial"):
        drawn = pd.Series(patients[rows["position"]]).value_counts()
        assert (drawn % 3 == 0).all() and int((drawn // 3).sum()) == n // 3
