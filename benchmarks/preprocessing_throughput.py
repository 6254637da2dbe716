"""Throughput and peak memory of building the pretraining window store from WFDB records.

Question answered: does ingestion (WfdbFolder) + preprocessing + window-store writing keep
its memory flat as the corpus grows, and how many windows per second does it manage?

For each corpus size a synthetic corpus of WFDB records (half at 250 Hz, half at 500 Hz,
15 min each, enough for windows_per_recording random windows) is written to a temporary
folder; then a *fresh* Python process reads it, preprocesses it and streams it into a
WindowStore, so that the peak RSS (getrusage ru_maxrss) belongs to that run alone. RSS is
also sampled every 50 ms from /proc/self/statm during the run. Temporary files are removed.

    /tmp/venv/bin/python benchmarks/preprocessing_throughput.py --windows 50000 200000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ecg_transfer.signals.preprocess import PreprocessConfig, windows_from_unlabelled_records
from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.wfdb_records import WfdbFolder, write_wfdb_records
from ecg_transfer.signals.window_store import WindowStoreWriter

RECORD_SECONDS = 900.0  # 100 non-overlapping 8.192 s windows need 819.2 s


def _synthetic_ecg(seconds: float, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian 'QRS' bumps at a random heart rate, plus baseline wander and noise, in mV.

    Enough realism for a throughput test: the cost of preprocessing does not depend on
    the waveform, only on its length and rate.
    """
    n = int(seconds * fs)
    t = np.arange(n) / fs
    beat_period = 60.0 / rng.uniform(50, 110)
    phase = (t % beat_period) - beat_period / 3
    ecg = 1.2 * np.exp(-0.5 * (phase / 0.012) ** 2) + 0.25 * np.exp(-0.5 * ((phase - 0.25) / 0.04) ** 2)
    wander = 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    return ecg + wander + 0.02 * rng.standard_normal(n)


def _records(n_records: int, seed: int) -> Iterator[EcgRecord]:
    rng = np.random.default_rng(seed)
    for i in range(n_records):
        fs = 250.0 if i % 2 == 0 else 500.0
        yield EcgRecord(
            record_id=f"rec{i:06d}",
            patient_id=f"pat{i:06d}",
            signal=_synthetic_ecg(RECORD_SECONDS, fs, rng),
            fs=fs,
            lead="II",
            label=None,
            source="synthetic",
        )


class _RssSampler(threading.Thread):
    """Highest resident set size seen by sampling /proc/self/statm."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop_event = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        while not self._stop_event.is_set():
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self._page
            self.peak_bytes = max(self.peak_bytes, rss)
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _worker(corpus: Path, store: Path, windows_per_recording: int, chunk_size: int) -> None:
    """Runs in its own process: read + preprocess + write, then print one JSON line."""
    sampler = _RssSampler()
    sampler.start()
    cfg = PreprocessConfig(windows_per_recording=windows_per_recording)
    exclusions = ExclusionLog()
    n_records = 0

    def counted(records: Iterator[EcgRecord]) -> Iterator[EcgRecord]:
        nonlocal n_records
        for record in records:
            n_records += 1
            yield record

    started = time.perf_counter()
    records = counted(WfdbFolder(corpus, progress=False).iter_records(exclusions))
    with WindowStoreWriter(store, cfg.window_length) as writer:
        for windows, index in windows_from_unlabelled_records(
            records, cfg, seed=0, chunk_size=chunk_size, exclusions=exclusions, progress=False
        ):
            writer.append(windows, index)
    # Leaving the with-block closed the writer: the store is complete and renamed into place.
    elapsed = time.perf_counter() - started
    sampler.stop()
    n_windows = json.loads((store / "meta.json").read_text())["n_windows"]
    print(
        json.dumps(
            {
                "records": n_records,
                "excluded": len(exclusions.to_frame()),
                "windows": n_windows,
                "seconds": elapsed,
                "store_bytes": (store / "windows.f32").stat().st_size,
                "peak_rss_getrusage_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "peak_rss_sampled_bytes": sampler.peak_bytes,
            }
        )
    )


def _run_size(n_windows: int, windows_per_recording: int, chunk_size: int, workdir: Path) -> dict:
    n_records = -(-n_windows // windows_per_recording)
    corpus = workdir / f"corpus_{n_windows}"
    store = workdir / f"store_{n_windows}"
    t0 = time.perf_counter()
    write_wfdb_records(corpus, _records(n_records, seed=n_windows), progress=True)
    corpus_seconds = time.perf_counter() - t0
    corpus_bytes = sum(p.stat().st_size for p in corpus.iterdir())
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(corpus), str(store),
         "--windows-per-recording", str(windows_per_recording), "--chunk-size", str(chunk_size)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(target_windows=n_windows, corpus_bytes=corpus_bytes, corpus_write_seconds=corpus_seconds)
    shutil.rmtree(corpus)
    shutil.rmtree(store)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[50_000, 200_000], help="corpus sizes in windows")
    parser.add_argument("--windows-per-recording", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=1024, help="windows per chunk written")
    parser.add_argument("--workdir", default=None, help="where temporary corpora go (default: system temp)")
    parser.add_argument("--worker", nargs=2, metavar=("CORPUS", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        _worker(Path(args.worker[0]), Path(args.worker[1]), args.windows_per_recording, args.chunk_size)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="ecg_preproc_bench_", dir=args.workdir) as tmp:
        for n in args.windows:
            rows.append(_run_size(n, args.windows_per_recording, args.chunk_size, Path(tmp)))
    mib = 1024**2
    header = (
        "| windows | records | corpus on disk (MiB) | store (MiB) | time (s) | records/s | windows/s "
        "| peak RSS getrusage (MiB) | peak RSS sampled (MiB) |"
    )
    print(header)
    print("|" + "---|" * 9)
    for r in rows:
        print(
            f"| {r['windows']:,} | {r['records']:,} | {r['corpus_bytes'] / mib:,.0f} | {r['store_bytes'] / mib:,.0f} "
            f"| {r['seconds']:.1f} | {r['records'] / r['seconds']:.1f} | {r['windows'] / r['seconds']:,.0f} "
            f"| {r['peak_rss_getrusage_bytes'] / mib:.0f} | {r['peak_rss_sampled_bytes'] / mib:.0f} |"
        )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
