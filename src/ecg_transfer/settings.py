"""Project settings: hooks, the configuration loader, its environments and how they merge, and
the library warnings a `kedro run` does not print."""

import warnings

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from ecg_transfer.hooks import MlflowRunHooks, NodeTimingHooks
from ecg_transfer.pipelines.configured_arms import RunEnvironmentHooks

# Known, harmless library warnings that every `kedro run` printed before any line of ours (issue
# 20 item 2). Filtered by their exact text, so any other warning still shows:
# - OmegaConf deprecates register_new_resolver(), which Kedro's config loader and kedro-mlflow
#   call themselves at every start: nothing in this project to change;
# - MLflow asks for type hints on a PythonModel's `predict`: it is kedro-mlflow's
#   KedroPipelineModel, imported by the plugin; this project logs no pyfunc model;
# - Kedro's CLI deprecates `--pipeline` for `--pipelines`: both mean the same here, and the docs'
#   and users' `kedro run --pipeline=starvation` keeps working.
# The last two are raised by the `kedro` command while it loads its plugins and parses options,
# before it reads these settings: filtered here for sessions in Python (a notebook, the tests).
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)
warnings.filterwarnings("ignore", message=r"Option '--pipeline' is deprecated")

HOOKS = (NodeTimingHooks(), MlflowRunHooks(), RunEnvironmentHooks())  # the last: --env shapes the arms

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments override single parameters (conf/test sets only what it shrinks).
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
    # ${oc.env:NAME,default} everywhere, not only in credentials: mlflow.yml reads the tracking
    # server from MLFLOW_TRACKING_URI (see docs/tracking.md).
    "custom_resolvers": {"oc.env": oc.env},
}
