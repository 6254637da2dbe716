"""The simulated data go through the real writers and come back through the real readers."""

from __future__ import annotations

import numpy as np

from ecg_transfer.signals.chapman import ChapmanRelease, write_chapman_release
from ecg_transfer.signals.records import ExclusionLog
from ecg_transfer.signals.synthetic import simulate_chapman_release, simulate_monitor_corpus
from ecg_transfer.signals.wfdb_records import WfdbFolder, write_wfdb_records


def test_synthetic_release_reads_back_as_a_chapman_release(tmp_path):
    release = simulate_chapman_release(22, seed=2, min_per_class=2)
    assert write_chapman_release(tmp_path, release.diagnostics, release.iter_waveforms(progress=False),
                                 progress=False) == 22
    log = ExclusionLog()
    records = list(ChapmanRelease(tmp_path, progress=False).iter_records(log))
    assert len(log.to_frame()) == 0
    assert len(records) == 22
    by_name = dict(zip(release.diagnostics["FileName"], release.diagnostics["Rhythm"]))
    first_name = release.diagnostics["FileName"].iloc[0]
    for record in records:
        assert record.label == by_name[record.record_id]
        assert record.fs == 500.0 and record.signal.shape == (5000,)
        if record.record_id == first_name:
            # The reader turns microvolts into millivolts; the CSV keeps 3 decimals of a uV.
            np.testing.assert_allclose(record.signal, release.waveform(0)[:, 1] / 1000.0, atol=1e-6)


def test_synthetic_monitor_corpus_reads_back_as_a_wfdb_folder(tmp_path):
    corpus = simulate_monitor_corpus(4, 12.0, seed=4)
    assert write_wfdb_records(tmp_path, corpus.iter_records(progress=False), progress=False) == 4
    log = ExclusionLog()
    records = {r.record_id: r for r in WfdbFolder(tmp_path, progress=False).iter_records(log)}
    assert len(log.to_frame()) == 0 and len(records) == 4
    for original in corpus.iter_records(progress=False):
        read = records[original.record_id]
        assert read.fs == original.fs and read.label is None
        assert read.patient_id == original.patient_id
        # WFDB format 16 stores integers; the gain wfdb picks keeps errors below a microvolt.
        np.testing.assert_allclose(read.signal, original.signal, atol=1e-3)
