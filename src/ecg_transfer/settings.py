"""Project settings: hooks, the configuration loader, its environments and how they merge."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from ecg_transfer.hooks import MlflowRunHooks, NodeTimingHooks

HOOKS = (NodeTimingHooks(), MlflowRunHooks())

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
