"""Time the default study from a fresh start: copies the project's configuration into an
empty directory (no data, no checkpoints, no mlflow.db), runs `kedro run --pipeline=starvation`
there and prints the wall time per node and in all, as a table.

    python benchmarks/study_runtime.py [--env ENV] [--keep DIR]

The README's runtime figure comes from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NODE_LINE = re.compile(r"node (\S+) took ([0-9.]+) s")


def fresh_copy(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir(exist_ok=True)
    (target / "src").mkdir(exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, target / name)
    for layer in (ROOT / "data").iterdir():
        if layer.is_dir():
            (target / "data" / layer.name).mkdir(parents=True, exist_ok=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None, help="Kedro environment (default: base + local)")
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ecg_study_runtime_"))
    project = fresh_copy(workdir)
    command = [sys.executable, "-m", "kedro", "run", "--pipeline=starvation"]
    if args.env:
        command.append(f"--env={args.env}")
    env = {**os.environ, "COLUMNS": "200", "KEDRO_DISABLE_TELEMETRY": "true"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log = done.stdout + done.stderr
    if done.returncode != 0:
        print(log[-5000:])
        raise SystemExit(f"kedro run failed with exit code {done.returncode}")

    timings = [(name, float(seconds)) for name, seconds in NODE_LINE.findall(log)]
    print(f"study runtime: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, cuda={torch.cuda.is_available()}")
    print(f"{'node':<45} {'seconds':>9}")
    print("-" * 55)
    for name, seconds in timings:
        print(f"{name:<45} {seconds:>9.1f}")
    print("-" * 55)
    print(f"{'sum of nodes':<45} {sum(s for _, s in timings):>9.1f}")
    print(f"{'wall time of `kedro run` (start-up included)':<45} {wall:>9.1f}")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
