"""CAE pretraining; its encoder (weights + model card) is what the transfer arms start from. The
other methods of ``pretraining.methods`` (none by default) train the same encoder with another
pretext task (docs/pretext_tasks.md): one node per method, each in its own namespace, writing
``<method>.pretext_encoder`` (weights + card), ``<method>.pretext_history`` and
``<method>.pretext_encoder_model`` (the MLflow model), so that a study runs only the methods
its arms name (pipeline_registry.py)."""

from __future__ import annotations

from collections.abc import Iterable

from kedro.pipeline import Pipeline, node, pipeline

from .nodes import plot_reconstructions, pretext_trainer, pretrain_autoencoder

PRETEXT_OUTPUTS = ["pretext_encoder", "pretext_history", "pretext_encoder_model"]
_SHARED = ["unlabelled_windows", "run_checkpoints", "run_tracker", "params:pretraining", "params:preprocessing"]


def cae_pipeline() -> Pipeline:
    """The paper's CAE: its weights, history, published encoder and MLflow model, and Fig. 4."""
    return pipeline(
        [
            node(pretrain_autoencoder, _SHARED,
                 ["cae_weights", "cae_history", "pretrained_encoder@saved", "pretrained_encoder_model"],
                 name="pretrain_autoencoder"),
            node(plot_reconstructions,
                 ["unlabelled_windows", "cae_weights", "params:pretraining", "params:preprocessing"],
                 "cae_reconstruction_figure", name="plot_reconstructions"),
        ],
        tags=["pretraining"],
    )


def pretext_pipeline(method_name: str) -> Pipeline:
    """One pretext method's node in namespace ``method_name``: its outputs become
    ``<method>.pretext_encoder`` etc., its inputs stay shared."""
    template = Pipeline([node(pretext_trainer(method_name), _SHARED, PRETEXT_OUTPUTS, name="pretrain_pretext_encoder")])
    return Pipeline(
        template,
        namespace=method_name,
        inputs={name for name in _SHARED if not name.startswith("params:")},
        parameters={name for name in _SHARED if name.startswith("params:")},
        tags=["pretraining", f"pretext_{method_name}"],
    )


def create_pipeline(methods: Iterable[str] | None = None, cae: bool = True, **kwargs) -> Pipeline:
    """The CAE (unless ``cae`` is false) and one node per pretext method in ``methods`` (names
    of ``pretraining.methods`` other than the ``reconstruct`` one; default: every configured one)."""
    if methods is None:
        from ecg_transfer.pipelines.configured_arms import configured_methods

        methods = [name for name, method in configured_methods().items() if method.task != "reconstruct"]
    pretext = sum((pretext_pipeline(name) for name in methods), Pipeline([]))
    return (cae_pipeline() if cae else Pipeline([])) + pretext
