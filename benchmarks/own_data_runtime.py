"""How long your own labelled data takes, per 1,000 records (docs/own_data.md, "Runtime").

Writes N single-lead WFDB records (360 Hz, lead MLII, 10-60 s, four classes) and a header-less
labels CSV in a fresh copy of the project, points `labelled_recordings` at them, and times with
`kedro run`: ingestion + preprocessing (the `study` pipeline up to the ingestion report), then
one arm's fine-tuning (`random`, one trial at 100 %, the default 10 epochs); the unlabelled
side is the bundled simulated corpus, written first and not timed. Prints a table
with the seconds and the seconds per 1,000 records.

    python benchmarks/own_data_runtime.py [--records 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import wfdb
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from study_runtime import fresh_copy  # noqa: E402

CLASSES = ("normal", "afib", "slow", "noisy")
FS = 360.0


def write_folder(root: Path, n_records: int, seed: int = 0) -> Path:
    """N crude lead-II-like records whose rhythm differs by class, and their labels CSV."""
    rng = np.random.default_rng(seed)
    folder = root / "my_ecgs"
    folder.mkdir(parents=True)
    rows = []
    for i in range(n_records):
        label = CLASSES[i % len(CLASSES)]
        seconds = float(rng.uniform(10, 60))
        t = np.arange(int(seconds * FS)) / FS
        rr = {"normal": 0.8, "afib": None, "slow": 1.3, "noisy": 0.8}[label]
        beats = np.cumsum(rng.uniform(0.35, 1.0, int(seconds / 0.35) + 2) if rr is None
                          else np.full(int(seconds / rr) + 2, rr) * rng.normal(1, 0.02, int(seconds / rr) + 2))
        signal = np.zeros_like(t)
        for beat in beats[beats < seconds - 0.3]:
            signal += np.exp(-0.5 * ((t - beat) / 0.012) ** 2)
        signal += rng.normal(0, 0.3 if label == "noisy" else 0.02, t.size)
        wfdb.wrsamp(f"rec_{i:05d}", fs=FS, units=["mV"], sig_name=["MLII"], p_signal=signal.reshape(-1, 1),
                    fmt=["16"], write_dir=str(folder))
        rows.append(f"rec_{i:05d},{label}")
    (root / "my_labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "true"
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = fresh_copy(Path(tempfile.mkdtemp(prefix="ecg_own_data_")))
    folder = write_folder(project / "data" / "01_raw", args.records)
    entry = {"type": "ecg_transfer.datasets.WfdbLabelledFolderDataset", "path": str(folder),
             "labels_csv": str(folder.parent / "my_labels.csv"), "lead": "MLII", "progress": False}
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump({"labelled_recordings": entry}))
    (project / "conf" / "local" / "parameters.yml").write_text(
        yaml.safe_dump({"study": {"fractions": [1.0], "n_trials": 1}}))
    os.chdir(project)
    bootstrap_project(project)
    timings = {}
    with KedroSession.create(project_path=project) as session:  # the unlabelled corpus (not timed)
        session.run(pipeline_name="bundled_data", node_names=["simulate_unlabelled_corpus"])
    started = time.perf_counter()
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_name="study", to_nodes=["report_ingestion", "draw_bootstrap_samples"])
    timings["ingestion + preprocessing"] = time.perf_counter() - started
    started = time.perf_counter()
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_name="finetuning", namespaces=["random"])
    timings["one arm, one trial at 100 %, 10 epochs"] = time.perf_counter() - started
    print(f"{args.records} records; {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| step | seconds | seconds per 1,000 records |")
    print("|---|---|---|")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds:.1f} | {seconds * 1000 / args.records:.1f} |")


if __name__ == "__main__":
    main()
