"""Shared fixtures: a throw-away copy of the project, so tests that run Kedro never touch
the working tree's data/ or mlflow.db."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@contextlib.contextmanager
def inside_project(project: Path) -> Iterator[Path]:
    """Run the block as `kedro run` in ``project`` would: ``project`` the working folder, telemetry
    off, and no MLFLOW_TRACKING_URI inherited (mlflow.set_tracking_uri exports it, and an
    earlier session's store would win over this copy's conf: mlflow.yml reads the variable
    first). The working folder is restored after the block."""
    previous = os.getcwd()
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(project)
    try:
        yield project
    finally:
        os.chdir(previous)


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
    for env in ("local", "test", "paper", "real", "pretext"):
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


@pytest.fixture(scope="session")
def own_labelled_folder(tmp_path_factory):
    """A user's own labelled WFDB folder + header-less labels CSV (360 Hz, lead MLII, classes
    normal/afib/other/noisy): tests/fixtures/own_labelled.py. Shared: copy before changing."""
    from tests.fixtures.own_labelled import write_own_labelled_folder

    return write_own_labelled_folder(tmp_path_factory.mktemp("own_labelled"))


@dataclass(frozen=True)
class MlflowServer:
    uri: str  # http://127.0.0.1:<port>
    backend_store: Path  # its SQLite file
    artifacts: Path  # where it stores artifacts
    log: Path  # its stdout and stderr


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's process group (it was started in its own session: uvicorn's worker and
    MLflow's job runner are its children)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[tuple[MlflowServer, subprocess.Popen]]:
    """A real `mlflow server` on 127.0.0.1 (free port, SQLite backend and artifact root under
    ``root``, one worker), answering its health check; stopped on exit."""
    port = free_port()
    server = MlflowServer(f"http://127.0.0.1:{port}", root / "mlflow.db", root / "artifacts", root / "server.log")
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{server.backend_store}", "--artifacts-destination", str(server.artifacts),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(server.log, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # a few seconds on a quiet machine
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{server.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in 180 s:\n{server.log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server, process
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real `mlflow server` up for the whole test session and stopped at its end. Use an
    experiment of your own: other tests log to it too."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as (server, _):
        yield server
