"""Shared fixtures: a throw-away copy of the project, so tests that run Kedro never touch
the working tree's data/ or mlflow.db."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """conf/, pyproject.toml and .telemetry copied into a temp dir with the data layers; cwd set
    there because MLflow resolves ``sqlite:///mlflow.db`` against the working directory."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # kedro insists on the source dir; the package itself is installed
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    for layer in sorted((PROJECT_ROOT / "data").iterdir()):
        if layer.is_dir():
            (root / "data" / layer.name).mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield root
    os.chdir(PROJECT_ROOT)
