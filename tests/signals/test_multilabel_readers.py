"""Readers under task: multilabel: every mapped SNOMED code kept, several labels per CSV record."""

from pathlib import Path

import pytest

from ecg_transfer.signals.records import ExclusionLog
from ecg_transfer.signals.wfdb_records import PhysioNetLabelledWfdb

PHYSIONET = Path(__file__).resolve().parents[1] / "fixtures" / "physionet_wfdb"


def _labels(reader):
    log = ExclusionLog()
    labels = {r.record_id: r.label for r in reader.iter_records(log)}
    return labels, log.to_frame().set_index("record_id")["reason"].to_dict()


def test_physionet_multilabel_keeps_every_rhythm_code():
    labels, excluded = _labels(PhysioNetLabelledWfdb(PHYSIONET, task="multilabel", progress=False))
    # HR06003: Dx 426783006 (SR), 427084000 (ST): excluded under single, both kept here
    assert labels["HR06003"] == "SR;ST" and labels["JS20012"] == "AT;ST" and labels["E07500"] == "SB"
    assert excluded == {"E07504": "no_rhythm_code"}
    single, single_excluded = _labels(PhysioNetLabelledWfdb(PHYSIONET, progress=False))
    assert "HR06003" not in single and single_excluded["HR06003"] == "multiple_rhythm_codes"


def test_physionet_user_label_set():
    mapping = {"67741000119109": "LAE", "426177001": "SB", "284470004": "PAC", "427084000": "ST",
               "111975006": "QT", "164934002": "TAb"}
    labels, excluded = _labels(PhysioNetLabelledWfdb(PHYSIONET, task="multilabel", label_set=mapping,
                                                     progress=False))
    assert labels == {"E07500": "LAE;SB", "E07504": "QT", "HR06003": "ST", "JS20004": "PAC;ST",
                      "JS20008": "PAC", "JS20012": "PAC;ST;TAb"}
    assert excluded == {}
    single, single_excluded = _labels(PhysioNetLabelledWfdb(PHYSIONET, label_set=mapping, progress=False))
    assert single == {"E07504": "QT", "HR06003": "ST", "JS20008": "PAC"}
    assert single_excluded["E07500"] == "multiple_rhythm_codes"


@pytest.mark.parametrize(("options", "message"), [
    ({"task": "multi"}, "task must be single or multilabel"),
    ({"label_set": "all"}, "label_set must be 'rhythms'"),
    ({"label_set": {"1": "A;B"}}, "labels holding"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        PhysioNetLabelledWfdb(PHYSIONET, progress=False, **options)


def _folder(root: Path, n: int = 5) -> Path:
    import numpy as np
    import wfdb

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        wfdb.wrsamp(f"r{i}", fs=250, units=["mV"], sig_name=["II"], p_signal=rng.normal(0, 0.3, (2500, 1)),
                    fmt=["16"], write_dir=str(root))
    return root


def test_labels_csv_with_several_labels_per_record_in_cells_and_rows(tmp_path):
    from ecg_transfer.signals.wfdb_records import WfdbLabelledFolder

    root = _folder(tmp_path / "ecgs")
    (tmp_path / "labels.csv").write_text(
        "record,label,patient_id\nr0,AF;LBBB,p0\nr1, N ,p1\nr1,RBBB,\nr2,~;AF,p2\nr3,~,p3\nr4,LBBB ; AF ; AF,p4\n"
    )
    options = {"label_map": {"N": "SR"}, "exclude_labels": ["~"], "progress": False}
    log = ExclusionLog()
    reader = WfdbLabelledFolder(root, tmp_path / "labels.csv", task="multilabel", **options)
    records = {r.record_id: (r.label, r.patient_id) for r in reader.iter_records(log)}
    assert records == {"r0": ("AF;LBBB", "p0"), "r1": ("RBBB;SR", "p1"), "r2": ("AF", "p2"), "r4": ("AF;LBBB", "p4")}
    assert log.to_frame().set_index("record_id")["reason"].to_dict() == {"r3": "excluded_label"}
    # under task: single a record named twice stays an exclusion, and a cell is one label
    log = ExclusionLog()
    single = {r.record_id: r.label for r in WfdbLabelledFolder(root, tmp_path / "labels.csv", **options)
              .iter_records(log)}
    assert single["r0"] == "AF;LBBB" and log.to_frame().set_index("record_id")["reason"]["r1"] == "duplicate_id"
