"""The simulated unlabelled bedside-monitor corpus."""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest

from ecg_transfer.signals.records import EcgRecord
from ecg_transfer.signals.synthetic import simulate_monitor_corpus

from .conftest import rr_features


@pytest.fixture(scope="module")
def corpus_records():
    corpus = simulate_monitor_corpus(12, 60.0, seed=3)
    return corpus, list(corpus.iter_records(progress=False))


def test_records_are_unlabelled_lead_ii_in_millivolts(corpus_records):
    corpus, records = corpus_records
    assert len(corpus) == 12 and len(records) == 12
    for record in records:
        assert isinstance(record, EcgRecord)
        assert record.lead == "II" and record.label is None
        assert record.fs in (250.0, 500.0)
        assert record.signal.shape == (int(60 * record.fs),) and record.signal.dtype == np.float64
        assert record.source == f"synthetic:{record.record_id}"
        assert 0.3 < np.ptp(record.signal) < 10.0  # mV
    assert len({r.patient_id for r in records}) == 12
    assert {r.fs for r in records} == {250.0, 500.0}


def test_heart_rate_measured_at_either_sampling_rate_is_physiological(corpus_records):
    _, records = corpus_records
    for record in records:
        hr, _, _ = rr_features(record.signal, record.fs)
        assert 30.0 < hr < 260.0


def test_same_seed_same_corpus_other_seed_other_corpus():
    a = simulate_monitor_corpus(3, 12.0, seed=1).iter_records(progress=False)
    assert inspect.isgenerator(a)
    b = simulate_monitor_corpus(3, 12.0, seed=1).iter_records(progress=False)
    for x, y in zip(a, b):
        assert x.fs == y.fs and x.record_id == y.record_id
        np.testing.assert_array_equal(x.signal, y.signal)
    other = simulate_monitor_corpus(3, 12.0, seed=2)
    assert not np.array_equal(other.record(0).signal[:100], simulate_monitor_corpus(3, 12.0, seed=1).record(0).signal[:100])


def test_corpus_mixes_rhythms_mostly_sinus_and_changes_some_within_a_recording():
    corpus = simulate_monitor_corpus(300, 120.0, seed=0)
    segments = [corpus.rhythms(i) for i in range(len(corpus))]  # plans only: cheap
    first = Counter(s[0] for s in segments)
    sinus = sum(first[r] for r in ("SR", "ST", "SB", "SA"))
    assert sinus / 300 > 0.55
    assert first["AFIB"] >= 20
    assert len(first) >= 7
    changing = sum(len(s) > 1 for s in segments)
    assert 0.15 < changing / 300 < 0.45


def test_sampling_rates_are_configurable_and_validated():
    corpus = simulate_monitor_corpus(4, 10.0, seed=0, sampling_rates=(360,))
    assert {r.fs for r in corpus.iter_records(progress=False)} == {360.0}
    with pytest.raises(ValueError, match="sampling_rates"):
        simulate_monitor_corpus(4, 10.0, seed=0, sampling_rates=(0,))
    with pytest.raises(ValueError, match="seconds_per_patient"):
        simulate_monitor_corpus(4, 0.0, seed=0)
