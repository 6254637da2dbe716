"""Why does `transfer` lose to `random` on the bundled data? Measure, don't tune (issue 11.9).

Runs the default study's `random` and `transfer` arms at one training fraction under a few
variants, each in a fresh copy of the project (bundled data, ingestion, preprocessing, CAE
pretraining, the two arms), and prints one table: the honest test weighted F1 (mean ± SD over
trials) of both arms, their difference, the CAE's held-out MSE, and the scale of the 60-feature
code at epoch 0 (SD over training windows, averaged over features) for a randomly initialised
and for the pretrained encoder. The simulator is never changed.

    python benchmarks/transfer_ablation.py [--fraction 0.25] [--variants default,lr0.001,...]

Variants (overrides of the default parameters):
- default: the study as configured;
- lr0.001: fine-tuning Adam at 0.001 instead of the paper's 0.005;
- epochs30: 30 fine-tuning epochs instead of 10;
- corpus10x: 10x the unlabelled corpus (2,400 simulated monitor patients, 14,400 windows).
The confound fix (the random arm's zero-init residual scheme) is the difference between this
project's history before and after; see docs/models_and_training.md for that row.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from study_runtime import fresh_copy  # noqa: E402

from ecg_transfer.study.tables import to_markdown  # noqa: E402

VARIANTS = {
    "default": {},
    "lr0.001": {"finetuning": {"training": {"lr": 0.001}}},
    "epochs30": {"finetuning": {"training": {"epochs": 30}}},
    "corpus10x": {"bundled_data": {"unlabelled": {"n_patients": 2400}}},
}
ARMS = ("random", "transfer")


def _code_scale(project: Path, seed: int = 0) -> tuple[float, float]:
    """SD over training windows of each of the 60 code features, averaged: random vs pretrained."""
    from ecg_transfer.datasets.torch_weights import TorchStateDictDataset
    from ecg_transfer.models.cae import CaeConfig
    from ecg_transfer.models.classifier import build_classifier
    from ecg_transfer.signals.window_store import WindowStore

    card = json.loads((project / "data/06_models/pretrained_encoder/model_card.json").read_text())
    cfg = CaeConfig.from_dict(card["architecture"])
    state = TorchStateDictDataset(str(project / "data/06_models/pretrained_encoder/encoder_weights.pt")).load()
    store = WindowStore(project / "data/05_model_input/labelled_windows")
    x = torch.from_numpy(np.asarray(store.take(store.split_indices("train")), dtype=np.float32)).unsqueeze(1)
    scales = []
    for init in ("random", "pretrained"):
        model = build_classifier(cfg, 2, seed, init=init, encoder_state=state if init == "pretrained" else None)
        with torch.no_grad():
            codes = model.encoder.eval()(x).numpy()
        scales.append(float(codes.std(axis=0).mean()))
    return scales[0], scales[1]


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def run_variant(name: str, fraction: float, workdir: Path) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ecg_transfer.study.summaries import summarise_runs

    project = fresh_copy(workdir / name)
    params = _merge(VARIANTS[name], {"study": {"fractions": [fraction]}})
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(params))
    os.chdir(project)
    bootstrap_project(project)
    started = time.perf_counter()
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_name="starvation", to_nodes=["draw_bootstrap_samples", "pretrain_autoencoder"])
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_name="finetuning", namespaces=list(ARMS))
    seconds = time.perf_counter() - started
    histories = pd.concat(
        [pd.read_csv(project / f"data/07_model_output/{arm}/training_histories.csv") for arm in ARMS]
    )
    summary = summarise_runs(histories)
    cae = pd.read_csv(project / "data/07_model_output/cae_history.csv")
    code_random, code_pretrained = _code_scale(project)
    row = {"variant": name, "fraction": fraction, "n_trials": int(summary["trial"].nunique())}
    means = {}
    for arm in ARMS:
        values = summary.loc[summary["arm"] == arm, "honest_test_f1_weighted"]
        means[arm] = values.mean()
        row[f"{arm} honest F1w"] = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    row["transfer - random"] = f"{means['transfer'] - means['random']:+.3f}"
    row["CAE test MSE"] = f"{cae.loc[cae['split'] == 'test', 'mse'].min():.3f}"
    row["code SD random / pretrained"] = f"{code_random:.3f} / {code_pretrained:.3f}"
    row["minutes"] = f"{seconds / 60:.1f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    args = parser.parse_args()
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "true"
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ecg_ablation_"))
    rows = [run_variant(name, args.fraction, workdir) for name in args.variants.split(",")]
    table = pd.DataFrame(rows).set_index("variant")
    print(to_markdown(table))


if __name__ == "__main__":
    main()
