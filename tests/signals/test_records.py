import numpy as np
import pytest

from ecg_transfer.signals.records import (
    EXCLUSION_REASONS,
    RHYTHMS,
    EcgRecord,
    ExclusionLog,
    rhythm_from_acronym,
    signal_problem,
)


def test_rhythm_order_is_the_class_index():
    assert RHYTHMS.index("SB") == 0
    assert RHYTHMS.index("SAAWR") == 10
    assert len(set(RHYTHMS)) == 11


def test_exclusion_log_counts_by_dataset_and_reason(caplog):
    log = ExclusionLog()
    log.add("a", "r1", "/x/r1.csv", "nan", "3 NaN samples")
    log.add("a", "r2", "/x/r2.csv", "nan")
    log.add("b", "r3", "/y/r3.hea", "flat_lead")
    frame = log.to_frame()
    assert list(frame.columns) == ["dataset", "record_id", "source", "reason", "detail"]
    assert frame["record_id"].tolist() == ["r1", "r2", "r3"]
    counts = log.counts()
    assert counts.to_dict("records") == [
        {"dataset": "a", "reason": "nan", "count": 2},
        {"dataset": "b", "reason": "flat_lead", "count": 1},
    ]
    assert log.count("nan") == 2 and log.count("nan", dataset="b") == 0
    assert len(log) == 3
    assert "r1" in caplog.text and "nan" in caplog.text


def test_exclusion_log_empty_counts_have_the_columns():
    counts = ExclusionLog().counts()
    assert list(counts.columns) == ["dataset", "reason", "count"]
    assert counts.empty


def test_exclusion_log_rejects_an_unknown_reason():
    with pytest.raises(ValueError, match="unknown exclusion reason 'lost'"):
        ExclusionLog().add("a", "r", "s", "lost")
    assert "multiple_rhythm_codes" in EXCLUSION_REASONS


def test_ecg_record_checks_shape_rate_and_label():
    record = EcgRecord("r", "p", np.zeros(1000), 250.0, "II", "SR", "/f")
    assert record.duration_s == pytest.approx(4.0)
    with pytest.raises(ValueError, match="1-D"):
        EcgRecord("r", "p", np.zeros((10, 2)), 250.0, "II", None, "/f")
    with pytest.raises(ValueError, match="sampling rate"):
        EcgRecord("r", "p", np.zeros(10), 0.0, "II", None, "/f")
    with pytest.raises(ValueError, match="'XYZ'"):
        EcgRecord("r", "p", np.zeros(10), 250.0, "II", "XYZ", "/f")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("SA", "SA"), ("SI", "SA"), (" afib ", "AFIB"), ("SAAWR", "SAAWR"), ("Other", None),
     (None, None), (float("nan"), None)],
)
def test_rhythm_from_acronym(cell, expected):
    assert rhythm_from_acronym(cell) == expected


def test_signal_problem_reasons_in_order():
    fs = 100.0
    good = np.sin(np.arange(900) / 10)
    assert signal_problem(good, fs, 8.2, "II") is None
    # 820 samples is exactly 8.2 s: accepted; 819 is not
    assert signal_problem(good[:820], fs, 8.2, "II") is None
    assert signal_problem(good[:819], fs, 8.2, "II")[0] == "too_short"
    with_nan = good.copy()
    with_nan[5] = np.nan
    assert signal_problem(with_nan, fs, 8.2, "II") == ("nan", "1 NaN samples in lead II")
    assert signal_problem(np.zeros(900), fs, 8.2, "II")[0] == "flat_lead"
    assert signal_problem(np.full(900, 0.3), fs, 8.2, "II")[0] == "flat_lead"
    # a short NaN lead is counted once, as too_short
    assert signal_problem(with_nan[:10], fs, 8.2, "II")[0] == "too_short"
