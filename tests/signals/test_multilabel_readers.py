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
