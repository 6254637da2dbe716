"""Shared fixtures: a throw-away copy of the project, so tests that run Kedro never touch
the working tree's data/ or mlflow.db."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_project_copy(root: Path) -> Path:
    """conf/, pyproject.toml and .telemetry copied into ``root`` with empty data layers; the
    package itself is the installed one (kedro only insists that src/ exists)."""
    root.mkdir(parents=True)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # MLflow caches one store per tracking URI string: a relative sqlite:///mlflow.db used by
    # several project copies in one test process would all write to the first copy's file.
    mlflow_yml = (PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text()
    assert "sqlite:///mlflow.db" in mlflow_yml
    for env in ("local", "test", "paper"):
        (root / "conf" / env / "mlflow.yml").write_text(
            mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{root / 'mlflow.db'}")
        )
    (root / "src").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks")
    for layer in sorted((PROJECT_ROOT / "data").iterdir()):
        if layer.is_dir():
            (root / "data" / layer.name).mkdir(parents=True)
    return root


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """A project copy with cwd set there: MLflow resolves ``sqlite:///mlflow.db`` against the
    working directory."""
    root = make_project_copy(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root
