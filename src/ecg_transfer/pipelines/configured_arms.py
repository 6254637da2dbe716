"""The arms a `kedro run` builds its pipelines for.

Kedro builds pipelines before a run's parameters exist, yet there is one namespace per arm, so
the arms are read here from the project's configuration (conf/base, then the run's environment:
the session's ``--env``, which :class:`RunEnvironmentHooks` notes when the session's context is
made, before Kedro builds the pipelines; else ``KEDRO_ENV``; else conf/local). Every arm node checks, at run time, that the run's own
``study.arms`` still describes it (:func:`check_arm_unchanged`): an ``--env`` or ``--params``
that changes the arms fails loudly instead of running the wrong study.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.utils import find_kedro_project

from ecg_transfer.study.arms import ArmRegistry, ArmSpec, arm_registry, check_arm_methods
from ecg_transfer.training.pretext_methods import PretextMethod, methods_from_params

_PACKAGE_PROJECT = Path(__file__).resolve().parents[3]


def _project_root() -> Path:
    found = find_kedro_project(Path.cwd())
    return Path(found) if found else _PACKAGE_PROJECT


# (project folder, env) of the session whose context was made last in this process.
_SESSION_ENV: tuple[Path, str] | None = None


class RunEnvironmentHooks:
    """Notes the environment of a session (``kedro run --env=pretext``) when its context is
    made: Kedro builds the pipelines after that, so the arms and methods they are built for are
    the environment's, without ``KEDRO_ENV``."""

    @hook_impl
    def after_context_created(self, context) -> None:
        global _SESSION_ENV
        _SESSION_ENV = (Path(context.project_path).resolve(), context.env or "local")


def _configured_parameters(project_path, env) -> tuple[dict[str, Any], Path]:
    root = Path(project_path or _project_root())
    conf = root / "conf"
    noted = _SESSION_ENV[1] if _SESSION_ENV is not None and _SESSION_ENV[0] == root.resolve() else None
    env = env or noted or os.environ.get("KEDRO_ENV") or "local"
    # The project's own loader settings: a bare loader would unregister the project's custom
    # resolvers (OmegaConf's resolvers are global) for the rest of the process.
    from ecg_transfer import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=env, **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"], conf


def configured_arms(project_path: str | os.PathLike | None = None, env: str | None = None) -> ArmRegistry:
    """The registry from ``study.arms`` in the project's parameters (base, local, ``env``); an
    arm that names a pretraining method not in ``pretraining.methods`` is an error."""
    parameters, conf = _configured_parameters(project_path, env)
    study = parameters.get("study") or {}
    if "arms" not in study:
        raise ValueError(f"{conf}: the parameters have no study.arms block (conf/base/parameters_study.yml)")
    registry = arm_registry(study["arms"])
    check_arm_methods(registry, methods_from_params((parameters.get("pretraining") or {}).get("methods")))
    return registry


def configured_methods(project_path: str | os.PathLike | None = None, env: str | None = None) -> dict[str, PretextMethod]:
    """``pretraining.methods`` in the project's parameters (base, local, ``env``), typed."""
    parameters, _ = _configured_parameters(project_path, env)
    return methods_from_params((parameters.get("pretraining") or {}).get("methods"))


def check_arm_unchanged(spec: ArmSpec, study: dict[str, Any]) -> None:
    """Fail if the run's parameters describe arm ``spec.name`` otherwise than the pipeline."""
    registry = arm_registry(study["arms"])
    if spec.name not in registry or registry[spec.name] != spec:
        raise ValueError(
            f"arm {spec.name!r}: the pipeline was built for {spec} but this run's study.arms has "
            f"{registry[spec.name] if spec.name in registry else 'no such arm'}. Arms shape the "
            "pipeline, so set them in conf/base or conf/local, or in an environment (--env), not with --params."
        )
