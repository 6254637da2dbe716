import logging

import numpy as np
import pytest

from ecg_transfer.signals.records import (
    EXCLUSION_REASONS,
    SYNTHETIC_MARKER,
    Candidate,
    EcgRecord,
    Excluded,
    ExclusionLog,
    RecordSource,
    SignalChecks,
    is_simulated,
    read_checked,
    signal_problem,
)


def test_exclusion_log_counts_by_dataset_and_reason():
    log = ExclusionLog()
    log.add("a", "r1", "/x/r1.csv", "non_finite", "3 NaN samples")
    log.add("a", "r2", "/x/r2.csv", "non_finite")
    log.add("b", "r3", "/y/r3.hea", "flat_lead")
    frame = log.to_frame()
    assert list(frame.columns) == ["dataset", "record_id", "source", "reason", "detail"]
    assert frame["record_id"].tolist() == ["r1", "r2", "r3"]
    counts = log.counts()
    assert counts.to_dict("records") == [
        {"dataset": "a", "reason": "non_finite", "count": 2},
        {"dataset": "b", "reason": "flat_lead", "count": 1},
    ]
    assert log.count("non_finite") == 2 and log.count("non_finite", dataset="b") == 0
    assert len(log) == 3


def test_exclusion_log_warns_once_per_reason_and_lists_records_at_debug(caplog):
    log = ExclusionLog()
    with caplog.at_level(logging.DEBUG, logger="ecg_transfer.signals.records"):
        for i in range(50):
            log.add("a", f"r{i}", f"/x/r{i}.hea", "too_short", "short")
        log.add("a", "odd", "/x/odd.hea", "unreadable", "bad header")
        log.summarise()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "a: 50 record(s) excluded as too_short, e.g. r0 (/x/r0.hea): short",
        "a: 1 record(s) excluded as unreadable, e.g. odd (/x/odd.hea): bad header",
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 51


def test_exclusion_log_empty_counts_have_the_columns():
    counts = ExclusionLog().counts()
    assert list(counts.columns) == ["dataset", "reason", "count"]
    assert counts.empty


def test_exclusion_log_rejects_an_unknown_reason():
    with pytest.raises(ValueError, match="unknown exclusion reason 'lost'"):
        ExclusionLog().add("a", "r", "s", "lost")
    with pytest.raises(ValueError, match="unknown exclusion reason 'lost'"):
        Excluded("lost", "")
    for reason in ("multiple_rhythm_codes", "non_finite", "implausible_amplitude",
                   "excluded_label", "unlabelled_record"):
        assert reason in EXCLUSION_REASONS


def test_ecg_record_checks_shape_and_rate_and_takes_any_label():
    record = EcgRecord("r", "p", np.zeros(1000), 250.0, "II", "SR", "/f")
    assert record.duration_s == pytest.approx(4.0)
    with pytest.raises(ValueError, match="1-D"):
        EcgRecord("r", "p", np.zeros((10, 2)), 250.0, "II", None, "/f")
    with pytest.raises(ValueError, match="sampling rate"):
        EcgRecord("r", "p", np.zeros(10), 0.0, "II", None, "/f")
    # the class list is data: any non-empty label string is a label
    for label in ("XYZ", "afib", "Non-AF", "1"):
        assert EcgRecord("r", "p", np.zeros(10), 250.0, "II", label, "/f").label == label
    with pytest.raises(ValueError, match="label"):
        EcgRecord("r", "p", np.zeros(10), 250.0, "II", "", "/f")


def test_signal_problem_reasons_in_order():
    fs = 100.0
    good = np.sin(np.arange(900) / 10)
    assert signal_problem(good, fs, 8.2, "II") is None
    # 820 samples is exactly 8.2 s: accepted; 819 is not
    assert signal_problem(good[:820], fs, 8.2, "II") is None
    assert signal_problem(good[:819], fs, 8.2, "II")[0] == "too_short"
    with_nan = good.copy()
    with_nan[5] = np.nan
    assert signal_problem(with_nan, fs, 8.2, "II") == (
        "non_finite", "1 NaN and 0 infinite samples in lead II")
    with_inf = good.copy()
    with_inf[[7, 8]] = [np.inf, -np.inf]
    assert signal_problem(with_inf, fs, 8.2, "II") == (
        "non_finite", "0 NaN and 2 infinite samples in lead II")
    assert signal_problem(np.zeros(900), fs, 8.2, "II")[0] == "flat_lead"
    assert signal_problem(np.full(900, 0.3), fs, 8.2, "II")[0] == "flat_lead"
    # a short NaN lead is counted once, as too_short
    assert signal_problem(with_nan[:10], fs, 8.2, "II")[0] == "too_short"


def test_nan_gaps_pass_only_when_allowed_and_a_window_long_stretch_remains():
    fs = 100.0
    good = np.sin(np.arange(3000) / 10)
    gappy = good.copy()
    gappy[1000:1500] = np.nan  # stretches of 10 s and 15 s remain
    assert signal_problem(gappy, fs, 8.2, "II") == (
        "non_finite", "500 NaN and 0 infinite samples in lead II")  # the labelled readers' rule
    assert signal_problem(gappy, fs, 8.2, "II", allow_nan_gaps=True) is None
    assert SignalChecks(allow_nan_gaps=True).problem(
        EcgRecord("r", "p", gappy, fs, "II", None, "/f")) is None
    # 8.2 s at 100 Hz is 820 samples: a stretch of 820 is enough, 819 is not
    edge = good[:1700].copy()
    edge[819] = np.nan  # stretches of 819 and 880
    assert signal_problem(edge, fs, 8.2, "II", allow_nan_gaps=True) is None
    edge[1639] = np.nan  # now 819, 819 and 60
    reason, detail = signal_problem(edge, fs, 8.2, "II", allow_nan_gaps=True)
    assert reason == "non_finite"
    assert detail == ("2 NaN samples in lead II leave no NaN-free stretch of 8.2 s: "
                      "the longest is 819 samples = 8.19 s at 100 Hz")
    # an infinite sample is never a gap, and an all-NaN lead is excluded even with no minimum
    with_inf = gappy.copy()
    with_inf[7] = np.inf
    assert signal_problem(with_inf, fs, 8.2, "II", allow_nan_gaps=True) == (
        "non_finite", "500 NaN and 1 infinite samples in lead II")
    assert signal_problem(np.full(900, np.nan), fs, 0.0, "II", allow_nan_gaps=True) == (
        "non_finite", "lead II is all NaN (900 samples)")
    # the amplitude and flat checks look at the samples around the gaps
    spike = gappy.copy()
    spike[2000] = 50.0
    reason, detail = signal_problem(spike, fs, 8.2, "II", allow_nan_gaps=True)
    assert reason == "implausible_amplitude" and "sample 2000 is 50 mV" in detail
    flat = np.zeros(3000)
    flat[:10] = np.nan
    assert signal_problem(flat, fs, 8.2, "II", allow_nan_gaps=True) == (
        "flat_lead", "lead II is constant at 0")
    with pytest.raises(ValueError, match="allow_nan_gaps"):
        SignalChecks(allow_nan_gaps="yes")


def test_implausible_amplitude_is_measured_in_millivolts_from_the_median():
    fs = 100.0
    good = np.sin(np.arange(900) / 10)
    spike = good.copy()
    spike[300] = 1e300
    reason, detail = signal_problem(spike, fs, 8.2, "II")
    assert reason == "implausible_amplitude"
    assert "sample 300" in detail and "max_amplitude_mv=20" in detail
    # a constant offset is not an amplitude; 19 mV swings pass the 20 mV default, not 10 mV
    assert signal_problem(good + 150.0, fs, 8.2, "II") is None
    assert signal_problem(19.0 * good, fs, 8.2, "II") is None
    assert signal_problem(19.0 * good, fs, 8.2, "II", max_amplitude_mv=10.0)[0] == (
        "implausible_amplitude")
    with pytest.raises(ValueError, match="max_amplitude_mv"):
        SignalChecks(max_amplitude_mv=0)


class _ListSource:
    """The smallest RecordSource: proof that a reader is one class with two members."""

    def __init__(self, root, signals):
        self.root = root
        self._signals = signals

    def iter_records(self, exclusions):
        def read(name, signal):
            if signal is None:
                raise Excluded("missing_file", f"{name}: gone")
            return EcgRecord(name, name, signal, 100.0, "II", "x", name)

        candidates = [Candidate(name, name, lambda n=name, s=s: read(n, s))
                      for name, s in self._signals.items()]
        yield from read_checked("list", candidates, exclusions, SignalChecks(), progress=False)


def test_read_checked_reads_checks_and_excludes_with_one_reason_each(tmp_path):
    good = np.sin(np.arange(900) / 10)
    source = _ListSource(tmp_path, {"ok": good, "gone": None, "short": good[:10],
                                    "inf": np.where(np.arange(900) == 3, np.inf, good)})
    assert isinstance(source, RecordSource)
    log = ExclusionLog()
    assert [r.record_id for r in source.iter_records(log)] == ["ok"]
    assert log.to_frame()[["record_id", "reason"]].values.tolist() == [
        ["gone", "missing_file"], ["short", "too_short"], ["inf", "non_finite"]]


def test_is_simulated_reads_the_marker(tmp_path):
    assert not is_simulated(tmp_path)
    (tmp_path / SYNTHETIC_MARKER).write_text("{}")
    assert is_simulated(tmp_path)


def test_the_record_contract_knows_no_class_list():
    """The 11 Chapman rhythms live with the Chapman readers; the shared contract has no labels."""
    from ecg_transfer.signals import records

    assert not hasattr(records, "RHYTHMS")
