"""The study's class list, decided from the labelled manifest (any label strings)."""

import pandas as pd
import pytest

from ecg_transfer.signals.classes import DECISION_COLUMNS, ClassConfig, decide_classes


def _manifest(patients_per_label: dict[str, int], records_per_patient: int = 1) -> pd.DataFrame:
    rows = [
        {"record_id": f"{label}_{p}_{r}", "patient_id": f"{label}_{p}", "label": label, "source": f"/x/{label}_{p}_{r}"}
        for label, n in patients_per_label.items()
        for p in range(n)
        for r in range(records_per_patient)
    ]
    return pd.DataFrame(rows)


def test_classes_by_descending_record_count_ties_alphabetical():
    manifest = _manifest({"normal": 9, "af": 5, "other": 5, "noisy": 7})
    classes, excluded = decide_classes(manifest, ClassConfig(), min_patients=4)
    assert classes == ["normal", "noisy", "af", "other"]
    assert excluded.empty and list(excluded.columns) == DECISION_COLUMNS


def test_a_configured_list_fixes_the_order_and_refuses_unknown_labels():
    manifest = _manifest({"N": 9, "A": 5, "O": 5, "~": 4})
    classes, _ = decide_classes(manifest, ClassConfig(classes=("A", "N", "O", "~")), min_patients=4)
    assert classes == ["A", "N", "O", "~"]
    with pytest.raises(ValueError, match=r"not among the configured preprocessing.classes.*O \(5 records\), ~ \(4 records\).*exclude_labels"):
        decide_classes(manifest, ClassConfig(classes=("N", "A")), min_patients=4)


def test_a_class_too_small_to_split_is_excluded_and_counted():
    manifest = _manifest({"N": 9, "A": 6, "rare": 3}, records_per_patient=2)
    classes, excluded = decide_classes(manifest, ClassConfig(), min_patients=4)
    assert classes == ["N", "A"]
    assert len(excluded) == 6 and set(excluded["reason"]) == {"class_too_small"}
    assert set(excluded["outcome"]) == {"excluded"} and set(excluded["dataset"]) == {"labelled"}
    assert sorted(excluded["record_id"]) == sorted(manifest.loc[manifest["label"] == "rare", "record_id"])
    assert excluded["detail"].str.contains("class rare has 3 patient").all()
    assert excluded["source"].str.startswith("/x/rare").all()


def test_a_class_too_small_is_an_error_naming_it_when_asked():
    manifest = _manifest({"N": 9, "A": 6, "rare": 3}, records_per_patient=5)  # 15 records, 3 patients
    with pytest.raises(ValueError, match=r"fewer than 4 patients.*rare \(3 patients\)"):
        decide_classes(manifest, ClassConfig(small_classes="error"), min_patients=4)


def test_fewer_than_two_classes_left_is_an_error():
    with pytest.raises(ValueError, match=r"1 class\(es\) left \(\['N'\]\).*\['A'\]"):
        decide_classes(_manifest({"N": 9, "A": 2}), ClassConfig(), min_patients=4)


def test_bad_manifest_and_config():
    with pytest.raises(KeyError, match="patient_id"):
        decide_classes(pd.DataFrame({"record_id": ["r"], "label": ["N"]}), ClassConfig(), 4)
    unlabelled = _manifest({"N": 5, "A": 5}).assign(label=lambda d: d["label"].where(d.index != 3, None))
    with pytest.raises(ValueError, match="no label.*N_3_0"):
        decide_classes(unlabelled, ClassConfig(), 4)
    with pytest.raises(ValueError, match="small_classes must be one of"):
        ClassConfig(small_classes="drop")
    with pytest.raises(ValueError, match="more than once"):
        ClassConfig(classes=("A", "A"))
    assert ClassConfig.from_params({"classes": ["A", "B"]}).classes == ("A", "B")


ODD_LABELS = ["~", "AF+flutter", "1st° AV block", "N/A", "(other)", "?", "..", "x" * 70]


def test_a_safe_name_is_the_label_itself_when_safe_and_else_a_slug_and_hash():
    from ecg_transfer.signals.classes import safe_class_name
    from ecg_transfer.tracking.keys import key_problem

    assert [safe_class_name(label) for label in ("SR", "AFIB", "non-AF", "class_2.b")] == [
        "SR", "AFIB", "non-AF", "class_2.b"]
    safe = [safe_class_name(label) for label in ODD_LABELS]
    assert safe[:3] == ["class-fb3c6e4d", "AF_flutter-a4756f1b", "1st_AV_block-1663d855"]
    assert len(set(safe)) == len(safe) and all(name not in ODD_LABELS for name in safe)
    assert all(key_problem(f"val_f1_{name}") is None for name in safe)  # MLflow takes them
    assert all("/" not in name and len(name) <= 64 for name in safe)  # and so does a file system


def test_the_class_table_maps_each_label_to_its_safe_name_and_refuses_a_shared_one():
    from ecg_transfer.signals.classes import class_table, safe_class_name

    table = class_table(ODD_LABELS)
    assert table["label"].tolist() == ODD_LABELS and table["class_index"].tolist() == list(range(len(ODD_LABELS)))
    with pytest.raises(ValueError, match="share the safe name"):
        class_table(["AF+flutter", safe_class_name("AF+flutter")])


def test_classes_sharing_a_safe_name_are_refused_when_the_classes_are_decided():
    from ecg_transfer.signals.classes import safe_class_name

    twin = safe_class_name("~")
    manifest = pd.DataFrame({"record_id": [f"r{i}" for i in range(16)], "patient_id": [f"p{i}" for i in range(16)],
                             "label": ["~"] * 8 + [twin] * 8})
    with pytest.raises(ValueError, match="label_map"):
        decide_classes(manifest, ClassConfig(), min_patients=4)
