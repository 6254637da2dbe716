"""Project settings: hooks, the configuration loader, its environments and how they merge."""

from kedro.config import OmegaConfigLoader

from ecg_transfer.hooks import CloseMlflowRunHooks, NodeTimingHooks

HOOKS = (NodeTimingHooks(), CloseMlflowRunHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments override single parameters (conf/test sets only what it shrinks).
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
