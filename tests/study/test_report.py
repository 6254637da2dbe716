import pandas as pd

from ecg_transfer.study.report import PAPER_LCI, PAPER_TABLE2, study_report
from ecg_transfer.study.statistics import compare_arms
from ecg_transfer.study.summaries import summarise_runs
from ecg_transfer.study.tables import mean_sd, table2, table3
from tests.study.histories import make_histories


def _report(meta):
    summary = summarise_runs(make_histories(fractions=(1.0, 0.5, 0.25)))
    comparisons = compare_arms(summary, n_boot=500)
    return summary, study_report(summary, comparisons, table2(summary), table3(summary), meta)


def test_paper_constants_match_paper_md():
    assert PAPER_TABLE2[(0.25, "random")] == (0.543, 0.009)
    assert PAPER_TABLE2[(1.0, "transfer")] == (0.857, 0.004)
    assert PAPER_LCI[(0.5, "transfer")] == (1.678, 0.266)
    assert len(PAPER_TABLE2) == 9 and len(PAPER_LCI) == 6


def test_report_holds_paper_numbers_ours_and_meta():
    meta = {"data": "synthetic Chapman-like, 300 records", "backbone": "CAE 9 blocks",
            "device": "2-core CPU", "synthetic": True}
    summary, text = _report(meta)
    for mean, sd in list(PAPER_TABLE2.values()) + list(PAPER_LCI.values()):
        assert f"{mean:.3f} ± {sd:.3f}" in text
    ours = summary[(summary["fraction"] == 0.25) & (summary["arm"] == "transfer")]
    assert mean_sd(ours["best_test_f1_weighted"].to_numpy()) in text
    assert mean_sd(ours["honest_test_f1_weighted"].to_numpy()) in text
    assert "synthetic data" in text and "CAE 9 blocks" in text and "2-core CPU" in text
    assert "optimistic" in text and "honest" in text and "Holm" in text
    assert "| 25% transfer vs random |" in text


def test_real_data_report_drops_synthetic_caveat():
    _, text = _report({"data": "Chapman 10,646 records", "synthetic": False})
    assert "Caveat: synthetic" not in text and "Chapman 10,646 records" in text
    _, default = _report({})
    assert "Caveat: synthetic" in default


def test_comparisons_of_several_metrics_get_one_table_each():
    summary = summarise_runs(make_histories(fractions=(1.0, 0.5)))
    comparisons = pd.concat(
        [compare_arms(summary, metric=m, n_boot=200).assign(metric=m)
         for m in ("best_test_f1_weighted", "honest_test_f1_weighted")],
        ignore_index=True,
    )
    text = study_report(summary, comparisons, table2(summary), table3(summary), {})
    assert "| best_test_f1_weighted | n (a/b/paired)" in text
    assert "| honest_test_f1_weighted | n (a/b/paired)" in text
    assert text.count("| 50% transfer vs random |") == 2
