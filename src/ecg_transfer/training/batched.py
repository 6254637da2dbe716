"""Train the K bootstrap trials of one (arm, fraction) at once, as one stacked model.

:func:`fit_trials` gives the same per-trial results as K calls of
:func:`ecg_transfer.training.engine.fit` (one per trial, each on ``train_x[train_rows[k]]``
with seed ``seeds[k]``), but every optimiser step runs the K models together: their
tensors are stacked on a leading trial dimension (``torch.func.stack_module_state``)
and the model runs once per step under ``torch.func.vmap`` over ``functional_call``.
Small convolutions become K-times wider grouped ones, so a GPU launches one kernel
where it launched K, and a CPU runs fewer, larger operations. This module is the stacked
stepper (:class:`StackedStepper`); the epoch loop, checkpoints and finishing are the ones
``fit`` uses (:func:`ecg_transfer.training.loop.train_group`).

Each trial keeps what ``fit`` gives it:

- its bootstrap sample (``train_rows[k]``, rows of the shared ``train_x``) and its data
  order, ``loop.epoch_rows(seed, epoch, n, groups)`` as in the engine (with
  ``train_groups``: one row per group each epoch);
- its initial weights (the K models are built by the caller, one per seed);
- its Adam state: one Adam over the stacked tensors is element-wise, hence K Adams;
- its dropout masks, drawn from its own generator seeded with its seed, in the order
  ``fit`` draws them from the global RNG (so with fp32 on CPU the masks are identical);
- its BatchNorm statistics and running stats (one native batch norm over K*C channels,
  see :class:`_StackedBatchNormFunction`); modules in eval mode (a frozen encoder) keep
  theirs fixed, and tensors that cannot change and are equal in every trial (a frozen
  pretrained encoder) are not stacked at all, so that part runs once for all trials;
- its early stopping and best epoch: a trial that stops is finished (best weights,
  ``result.pt``) and dropped from the stack, the others go on;
- its predictions, history and checkpoint: the same :class:`CheckpointStore` files as
  ``fit`` writes under the same run key, so a run interrupted or finished here is resumed
  or reused by ``fit`` and vice versa.

The trials of a group must have the same number of training rows (the bootstrap samples
of one fraction do, unless records give different numbers of windows: then group by size).
The windows go to the device once; each step gathers its (K, B) rows there, and the
evaluation splits are scored for all trials in one pass.

Limits: ``nn.Dropout`` is the only random layer supported (other random layers fail under
vmap's ``randomness="error"``); BatchNorm needs a ``momentum`` (not None). On CUDA the masks
come from per-trial CUDA generators, so dropout differs from a sequential CUDA run (which
uses the fused dropout kernel); the numbers then agree in distribution, not exactly.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ecg_transfer.models.cae import with_channel_axis
from ecg_transfer.training.checkpoints import CheckpointStore, run_groups_once
from ecg_transfer.training.engine import TrainConfig, learning_rate
from ecg_transfer.training.loop import (
    EvalSplit,
    FitResult,
    LoopContext,
    RowGroups,
    Run,
    adam,
    autocast,
    check_task,
    cpu_state,
    epoch_rows,
    finished_result,
    prepare,
    prepare_device,
    resume,
    split_rows,
    train_group,
    training_error,
    values_per_row,
)
from ecg_transfer.training.tasks import Task

#: Share of the free memory that ``batch_trials: auto`` plans to use (CUDA, CPU).
AUTO_MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}


# ---------------------------------------------------------------- stacked layers


class _StackedBatchNormFunction(torch.autograd.Function):
    """``F.batch_norm`` with a vmap rule that folds the trial dimension into the channels.

    One native batch norm over (B, K*C, ...) gives every trial its own batch statistics,
    affine weights and running stats (updated in place in the stacked buffers, which are
    viewed, never copied). vmap's generic rule applies the affine part as separate
    full-size multiplies and adds; on the 2-core CPU those cost about 40 % of a training
    step of the default classifier. Only ever called under vmap (see :class:`_StackedBatchNorm`).
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(x, running_mean, running_var, weight, bias, training, momentum, eps):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass  # reached when no input is batched: a frozen layer in eval mode, nothing to differentiate

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("batched trials: gradients flow through a BatchNorm only when its trials are stacked")

    @staticmethod
    def vmap(info, in_dims, x, running_mean, running_var, weight, bias, training, momentum, eps):
        trials = info.batch_size
        x_dim, *tensor_dims = in_dims[:5]
        tensors = (running_mean, running_var, weight, bias)
        if x_dim is None:
            x, x_dim = x.unsqueeze(0).expand(trials, *x.shape), 0
        if not training and all(d is None for d, t in zip(tensor_dims, tensors) if t is not None):
            # Eval mode with statistics shared by every trial (a frozen encoder): trials are rows.
            rows = x.movedim(x_dim, 0)
            out = F.batch_norm(rows.reshape(-1, *rows.shape[2:]), *tensors, False, momentum, eps)
            return out.view(rows.shape), 0
        if training and any(d is None for d, t in zip(tensor_dims[:2], tensors[:2]) if t is not None):
            raise RuntimeError("batched trials: a BatchNorm in training mode must have per-trial running stats")
        moved = x.movedim(x_dim, 1)  # (B, K, C, ...)
        shape = moved.shape
        flat = moved.reshape(shape[0], trials * shape[2], *shape[3:])

        def per_channel(tensor, dim):
            if tensor is None:
                return None
            if dim is None:
                return tensor.repeat(trials)
            return tensor.movedim(dim, 0).view(-1)  # a view: running stats update in place

        out = F.batch_norm(
            flat, *(per_channel(t, d) for t, d in zip(tensors, tensor_dims)), training, momentum, eps
        )
        return out.view(shape), 1


class _StackedBatchNorm:
    """Mixed into a BatchNorm module of the stacked template: ``_BatchNorm.forward`` with
    the batch norm itself done by :class:`_StackedBatchNormFunction`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        tracked = not self.training or self.track_running_stats
        return _StackedBatchNormFunction.apply(
            input, self.running_mean if tracked else None, self.running_var if tracked else None,
            self.weight, self.bias, bn_training, self.momentum, self.eps,
        )


class _PresetDropout(nn.Dropout):
    """``nn.Dropout`` whose mask (already divided by 1 - p) is set before each call; the
    masks come from each trial's own generator (see :class:`_TrialRandom`)."""

    mask: torch.Tensor | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return input
        if self.mask is None:
            raise RuntimeError("batched trials: a dropout layer ran without its mask (called twice in one forward?)")
        mask, self.mask = self.mask, None
        return input.mul_(mask) if self.inplace else input * mask


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot train as stacked trials, or None when it can."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout:
            return f"{name or 'the model'} is a {type(module).__name__} (only nn.Dropout is supported)"
        if isinstance(module, _BatchNorm) and module.momentum is None:
            return f"{name} is a BatchNorm with momentum=None (cumulative average)"
    return None


def _stacked_template(model: nn.Module) -> tuple[nn.Module, dict[str, _PresetDropout]]:
    """A parameter-free copy of ``model`` (meta tensors, replaced at every call) whose
    BatchNorm and dropout layers are the stacked versions above."""
    template = copy.deepcopy(model).to("meta")
    dropouts = {}
    for name, module in template.named_modules():
        if isinstance(module, _BatchNorm):
            module.__class__ = type(f"Stacked{type(module).__name__}", (_StackedBatchNorm, type(module)), {})
        elif type(module) is nn.Dropout:
            module.__class__ = _PresetDropout
            dropouts[name] = module
    return template, dropouts


# ---------------------------------------------------------------- per-trial randomness


class _TrialRandom:
    """One trial's RNG, standing in for the global generators that ``fit`` seeds with the
    trial's seed: dropout masks are drawn from it in the order ``fit`` draws them."""

    def __init__(self, seed: int, device: torch.device, payload: Mapping[str, Any] | None):
        self.cpu = torch.Generator().manual_seed(seed)
        self.cuda = torch.Generator(device=device).manual_seed(seed) if device.type == "cuda" else None
        if payload is not None:
            self.cpu.set_state(payload["torch_rng"])
            if self.cuda is not None and payload.get("cuda_rng") is not None:
                self.cuda.set_state(payload["cuda_rng"])

    def mask(self, shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
        # As ATen's CPU dropout: empty_like(input).bernoulli_(1 - p).div_(1 - p).
        generator = self.cuda if self.cuda is not None else self.cpu
        return torch.empty(shape, device=device).bernoulli_(1 - p, generator=generator).div_(1 - p)

    def states(self) -> dict[str, torch.Tensor | None]:
        return {"torch_rng": self.cpu.get_state(), "cuda_rng": None if self.cuda is None else self.cuda.get_state()}


# ---------------------------------------------------------------- the stack


class _TrialView:
    """What :func:`loop.cpu_state` needs of a model: one trial's ``state_dict``."""

    def __init__(self, stack: _TrialStack, position: int):
        self.stack, self.position = stack, position

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.stack.trial_state(self.position)


class _TrialStack:
    """The K trials' tensors stacked on dim 0, and one Adam over the trainable ones.

    ``params``: trainable (leaves with gradients); ``varying``: the other tensors that differ
    between trials or may change (buffers of modules in training mode); ``shared``: constant
    tensors equal in every trial, passed unbatched, so vmap runs that part once for all.
    """

    def __init__(self, models: Sequence[nn.Module], template: nn.Module, cfg: TrainConfig):
        first = models[0]
        self.state_keys = list(first.state_dict().keys())
        trainable = [name for name, p in first.named_parameters() if p.requires_grad]
        named = [{**dict(m.named_parameters()), **dict(m.named_buffers())} for m in models]
        self.params = {name: torch.stack([n[name].detach() for n in named]).requires_grad_() for name in trainable}
        self.varying, self.shared = {}, {}
        for name in named[0]:
            if name in self.params:
                continue
            values = [n[name].detach() for n in named]
            if _constant(template, first, name) and all(torch.equal(values[0], v) for v in values[1:]):
                self.shared[name] = values[0].clone()
            else:
                self.varying[name] = torch.stack(values)
        self.cfg = cfg
        self.optimizer = self._adam()

    def _adam(self) -> torch.optim.Adam:
        return adam(self.params.values(), self.cfg)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def load_optimizers(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Stack per-trial Adam state dicts (as ``fit`` checkpoints them) into the one Adam."""
        if not states[0]["state"]:
            return
        stacked = {}
        for index, first in states[0]["state"].items():
            entries = [s["state"][index] for s in states]
            steps = {float(e["step"]) for e in entries if "step" in e}
            if len(steps) > 1:
                raise ValueError(f"batched trials: the trials' optimisers are at different steps {sorted(steps)}")
            stacked[index] = {
                key: torch.stack([e[key] for e in entries]) if torch.is_tensor(value) and value.dim() > 0 else value
                for key, value in first.items()
            }
        self.optimizer.load_state_dict({"state": stacked, "param_groups": copy.deepcopy(states[0]["param_groups"])})

    def trial_state(self, position: int) -> dict[str, torch.Tensor]:
        values = {**self.params, **self.varying}
        return {key: values[key][position] if key in values else self.shared[key] for key in self.state_keys}

    def trial_optimizer(self, position: int) -> dict[str, Any]:
        """Trial ``position``'s Adam state dict, as a sequential Adam would have it."""
        full = self.optimizer.state_dict()
        return {
            "state": {
                index: {key: value[position].detach().cpu().clone() if torch.is_tensor(value) and value.dim() > 0
                        else value.clone() if torch.is_tensor(value) else value
                        for key, value in entry.items()}
                for index, entry in full["state"].items()
            },
            "param_groups": copy.deepcopy(full["param_groups"]),
        }

    def keep(self, positions: Sequence[int]) -> None:
        """Go on with these trials only (the others finished)."""
        index = torch.as_tensor(list(positions), device=next(iter(self.params.values())).device)
        full = self.optimizer.state_dict()
        self.params = {name: p.detach()[index].clone().requires_grad_() for name, p in self.params.items()}
        self.varying = {name: v[index].clone() for name, v in self.varying.items()}
        self.optimizer = self._adam()
        if full["state"]:
            self.optimizer.load_state_dict({
                "state": {i: {k: v[index] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in e.items()}
                          for i, e in full["state"].items()},
                "param_groups": full["param_groups"],
            })

    def clip_gradients(self, max_norm: float) -> None:
        """``clip_grad_norm_`` per trial: each trial's global gradient norm."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in grads]).norm(dim=0)
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


def _constant(template: nn.Module, model: nn.Module, name: str) -> bool:
    """A tensor that training cannot change: a frozen parameter, or a buffer of a module in
    eval mode while the model trains (e.g. a frozen encoder's BatchNorm)."""
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner)
    if attribute in dict(module.named_parameters(recurse=False)):
        return not getattr(module, attribute).requires_grad
    return not template.get_submodule(owner).training


# ---------------------------------------------------------------- the loop


def fit_trials(
    models: Sequence[nn.Module],
    task: Task,
    train_x,
    train_y,
    train_rows: Sequence[np.ndarray],
    evals: Mapping[str, Any] | None,
    cfg: TrainConfig,
    seeds: Sequence[int],
    checkpoints: CheckpointStore | None = None,
    run_keys: Sequence[str] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
    on_trial_epoch_end: Callable[[int, int, pd.DataFrame], None] | None = None,
    train_groups: Sequence[np.ndarray] | None = None,
) -> list[FitResult]:
    """Train the K ``models`` together; result k equals ``fit(models[k], task,
    train_x[train_rows[k]], train_y[train_rows[k]], evals, replace(cfg, seed=seeds[k]),
    checkpoints, run_keys[k])`` (with fp32 on CPU within float rounding; see the module doc).

    ``train_x``: every training row any trial uses; ``train_rows[k]``: trial k's rows (its
    bootstrap positions, repeats allowed), the same count for every trial. Models share one
    architecture and trainable set. Done runs are returned as stored, interrupted ones resume;
    models end with their run's final weights (the best with ``cfg.restore_best``), as in ``fit``.
    ``on_epoch_end(epoch)`` runs after the epoch's checkpoints are written, and before it
    ``on_trial_epoch_end(k, epoch, history_so_far)`` for every trial k still training (what
    live tracking needs: one MLflow run per trial, fed as epochs end). In the history,
    ``samples_per_s`` is the group's throughput (windows of all K trials per second).
    ``train_groups[k]``: one group id per row of ``train_rows[k]`` (fit's ``train_groups``);
    each epoch trial k trains one row of each of its groups; every trial needs the same number
    of groups.
    """
    check_task(task, "fit_trials")
    trials = len(models)
    keys = list(run_keys) if run_keys is not None else [None] * trials
    if trials == 0 or len(seeds) != trials or len(train_rows) != trials or len(keys) != trials:
        raise ValueError(
            f"fit_trials: got {trials} models, {len(seeds)} seeds, {len(train_rows)} row sets and "
            f"{len(keys)} run keys; give one of each per trial"
        )
    where = f"fit_trials[{keys[0] or task.name}, {trials} trials]"
    length = getattr(models[0], "input_length", None)
    train_y, ctx = prepare(task, length, train_x, train_y, evals, cfg, checkpoints, keys, where)
    rows = _check_rows(train_rows, train_x.shape[0], where)
    groups = _check_groups(train_groups, rows, where)
    results: list[FitResult | None] = [
        finished_result(model, checkpoints.load_result(key), task)
        if checkpoints is not None and checkpoints.is_done(key) else None for model, key in zip(models, keys)
    ]
    pending = [k for k in range(trials) if results[k] is None]
    if not pending:
        return results
    _check_stackable(models, where)
    ctx.device, ctx.progress = prepare_device(cfg), progress
    runs = {k: _start(models[k], keys[k], replace(cfg, seed=int(seeds[k])), ctx) for k in pending}
    data = _DeviceData(train_x, train_y, rows, ctx.splits, length, ctx.device)
    # Trials resumed from different epochs train in separate groups (one Adam step count each).
    for epoch in sorted({runs[k].state.epoch for k in pending}):
        group = [k for k in pending if runs[k].state.epoch == epoch]
        stepper = StackedStepper([runs[k] for k in group], [data.rows[k] for k in group], data, ctx,
                                 [groups[k] for k in group])
        callback = None if on_trial_epoch_end is None else (
            lambda i, epoch, history, group=group: on_trial_epoch_end(group[i], epoch, history))
        for k, result in zip(group, train_group(stepper, [runs[k] for k in group], ctx, callback, on_epoch_end)):
            results[k] = result
    return results


def _check_rows(train_rows: Sequence[np.ndarray], n_pool: int, where: str) -> list[np.ndarray]:
    rows = [np.asarray(r, dtype=np.int64) for r in train_rows]
    sizes = {r.size for r in rows}
    if len(sizes) != 1 or min(sizes) == 0 or any(r.ndim != 1 for r in rows):
        raise ValueError(f"{where}: every trial needs the same, non-zero number of training rows, got {sorted(sizes)}")
    if any(r.min() < 0 or r.max() >= n_pool for r in rows):
        raise ValueError(f"{where}: training rows fall outside 0..{n_pool - 1}")
    return rows


def _check_groups(train_groups, rows: list[np.ndarray], where: str) -> list[RowGroups | None]:
    """Each trial's :class:`RowGroups` (None each without ``train_groups``), as many groups each."""
    if train_groups is None:
        return [None] * len(rows)
    if len(train_groups) != len(rows):
        raise ValueError(f"{where}: got {len(train_groups)} group arrays for {len(rows)} trials; give one per trial")
    groups = [RowGroups.build(g, r.size, where) for g, r in zip(train_groups, rows)]
    sizes = {g.size for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"{where}: every trial needs the same number of training groups, got {sorted(sizes)}")
    return groups


def _start(model: nn.Module, key: str | None, cfg: TrainConfig, ctx: LoopContext) -> Run:
    """Trial's run, resumed from its checkpoint (weights loaded into ``model``, the Adam
    state kept in ``payload`` for the stack) or fresh."""
    model.to(ctx.device)
    optimizer = adam((p for p in model.parameters() if p.requires_grad), ctx.cfg)
    state, payload = resume(model, optimizer, ctx.task, cfg, ctx.checkpoints, key, f"fit[{key}]")
    return Run(key, cfg, state, payload, model, optimizer.state_dict())


def _check_stackable(models: Sequence[nn.Module], where: str) -> None:
    """The models can train as one stack: supported layers, one architecture and trainable set."""
    reason = unsupported_reason(models[0])
    if reason:
        raise ValueError(f"{where}: this model cannot train as batched trials: {reason}; use batch_trials 1")

    def signature(model):
        return (type(model), [(n, tuple(t.shape), t.dtype, getattr(t, "requires_grad", False))
                              for n, t in [*model.named_parameters(), *model.named_buffers()]])

    first = signature(models[0])
    for k, model in enumerate(models[1:], start=1):
        if signature(model) != first:
            raise ValueError(f"{where}: model {k} differs from model 0 in type, tensors or trainable set")


class _DeviceData:
    """The training rows every trial uses, and the eval splits, moved to the device once."""

    def __init__(self, train_x, train_y, rows: Sequence[np.ndarray], splits, length, device: torch.device):
        used = np.unique(np.concatenate(rows))
        # Trial rows as positions in the uploaded block (a memmap reads only the rows used).
        self.rows = [np.searchsorted(used, r) for r in rows]
        self.n = rows[0].size
        self.windows = length is not None
        self.x = _to_device(np.asarray(train_x[used], dtype=np.float32), device)
        self.labels = None if train_y is None else np.asarray(train_y)[used]
        self.y = None if self.labels is None else torch.from_numpy(self.labels).to(device)
        self.width = values_per_row(train_x)
        self.evals = {
            name: (_to_device(np.asarray(s.x, dtype=np.float32), device),
                   None if s.y is None else torch.from_numpy(np.asarray(s.y)).to(device))
            for name, s in splits.items()
        }


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class StackedStepper:
    """The loop's stepper for a group of trials that start at the same epoch: one stacked
    model under ``vmap``, one Adam over the stacked tensors, each trial's own dropout RNG."""

    rng_payload = None  # dropout draws from the trials' own generators, not the global RNG

    def __init__(self, runs: Sequence[Run], rows: Sequence[np.ndarray], data: _DeviceData, ctx: LoopContext,
                 groups: Sequence[RowGroups | None] | None = None):
        models = [run.model for run in runs]
        self.template, self.dropouts = _stacked_template(models[0])
        self.template.train()
        self.stack = _TrialStack(models, self.template, ctx.cfg)
        self.stack.load_optimizers([run.optimizer_state for run in runs])
        self.data, self.ctx, self.rows = data, ctx, list(rows)
        self.groups = list(groups) if groups is not None else [None] * len(self.rows)  # None: every row
        # Rows per epoch: all of them, or one per group (the same count for every trial).
        self.n = data.n if self.groups[0] is None else self.groups[0].size
        self.dropout_calls = self._dropout_calls(models[0])
        self.seeds = [run.config.seed for run in runs]
        self.keys = [run.key for run in runs]
        self.randoms = [_TrialRandom(run.config.seed, ctx.device, run.payload) for run in runs]

    def keep(self, positions: list[int]) -> None:
        self.stack.keep(positions)
        for name in ("rows", "groups", "seeds", "keys", "randoms"):
            setattr(self, name, [getattr(self, name)[p] for p in positions])

    def view(self, position: int) -> _TrialView:
        return _TrialView(self.stack, position)

    def parts(self, position: int) -> dict[str, Any]:
        return {"model": cpu_state(self.view(position)), "optimizer": self.stack.trial_optimizer(position),
                **self.randoms[position].states()}

    def load_final(self, position: int, model: nn.Module) -> None:
        model.load_state_dict(self.stack.trial_state(position))

    def _dropout_calls(self, model: nn.Module) -> list[tuple[_PresetDropout, tuple[int, ...]]]:
        """The active dropout layers in call order, with their per-window input shape."""
        probe = copy.deepcopy(model).cpu().eval()
        calls: list[tuple[str, tuple[int, ...]]] = []
        hooks = []
        for name, module in probe.named_modules():
            if type(module) is nn.Dropout:
                hooks.append(module.register_forward_pre_hook(
                    lambda m, args, name=name: calls.append((name, tuple(args[0].shape[1:])))))
        with torch.no_grad():
            sample = self.data.x[:1].cpu()
            probe(with_channel_axis(sample) if self.data.windows else sample)
        for hook in hooks:
            hook.remove()
        if len({name for name, _ in calls}) != len(calls):
            raise ValueError("batched trials: a dropout layer is called more than once per forward")
        return [(self.dropouts[name], shape) for name, shape in calls
                if self.dropouts[name].training and self.dropouts[name].p > 0]

    def _call(self, params, varying, x, masks):
        for (module, _), mask in zip(self.dropout_calls, masks):
            module.mask = mask
        return functional_call(self.template, (params, varying, self.stack.shared), (x,))

    def _positions(self, epoch: int) -> np.ndarray:
        """(K, n): each trial's rows of the uploaded block in its (seed, epoch) order, as fit's."""
        n, size = self.n, self.ctx.cfg.batch_size
        local = np.stack([
            np.concatenate([np.sort(order[b : b + size]) for b in range(0, n, size)])
            for order in (epoch_rows(seed, epoch, self.data.n, groups) for seed, groups in zip(self.seeds, self.groups))
        ])
        return np.stack([rows[row] for rows, row in zip(self.rows, local)])

    def train_epoch(self, epoch: int) -> list[list[dict]]:
        cfg, data, stack = self.ctx.cfg, self.data, self.stack
        self.template.train()
        n, size = self.n, cfg.batch_size
        steps_per_epoch = math.ceil(n / size)
        positions = self._positions(epoch)
        index = torch.from_numpy(positions).to(self.ctx.device)
        batched = vmap(self._step_loss, in_dims=(0, 0, 0, 0 if data.y is not None else None, 0), randomness="error")
        losses, outputs = [], []
        start = time.perf_counter()
        for batch_index, begin in enumerate(range(0, n, size)):
            rows = index[:, begin : begin + size]
            xb = data.x[rows]
            if data.windows and xb.dim() == 3:
                xb = xb.unsqueeze(2)  # one-lead windows: (K, B, L) -> (K, B, 1, L); C leads are (K, B, C, L)
            masks = [torch.stack([r.mask((rows.shape[1], *shape), module.p, self.ctx.device) for r in self.randoms])
                     for module, shape in self.dropout_calls]
            loss, out = batched(stack.params, stack.varying, xb, data.y[rows] if data.y is not None else None, masks)
            stack.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if cfg.grad_clip > 0:
                stack.clip_gradients(cfg.grad_clip)
            if cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0:
                rate = learning_rate(cfg, (epoch - 1) * steps_per_epoch + batch_index, steps_per_epoch)
                for group in stack.optimizer.param_groups:
                    group["lr"] = rate
            stack.optimizer.step()
            losses.append(loss.detach())
            if self.ctx.task.keeps_outputs:
                outputs.append(out.detach())
        values = torch.stack(losses).cpu().numpy()  # (steps, K); one transfer per epoch
        return self._train_rows(epoch, values, outputs, positions, time.perf_counter() - start)

    def _step_loss(self, params, varying, x, y, masks):
        with autocast(self.ctx.device, self.ctx.cfg):
            out = self._call(params, varying, x, masks)
        out = out.float()
        return self.ctx.task.loss(out, x, y), out

    def _train_rows(self, epoch: int, values: np.ndarray, outputs: list, positions, elapsed: float) -> list[list[dict]]:
        """Each trial's train row from its (steps,) batch losses, with fit's checks and sums."""
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            batch_index, position = bad[0]
            where = f"fit[{self.keys[position] or self.ctx.task.name}]"
            raise training_error(where, values[batch_index, position], epoch, batch_index)
        n, size = self.n, self.ctx.cfg.batch_size
        counts = [min(size, n - begin) for begin in range(0, n, size)]
        kept = torch.cat(outputs, dim=1).cpu() if outputs else None
        labels = self.data.labels[positions] if self.data.y is not None else None
        speed = {"samples_per_s": len(self.seeds) * n / max(elapsed, 1e-9)}
        rows = []
        for position in range(len(self.seeds)):
            loss_sum = 0.0
            for step, count in enumerate(counts):  # fit's order of float additions
                loss_sum += float(values[step, position]) * count
            row = self.ctx.task.train_row(loss_sum, n, self.data.width, None if kept is None else kept[position],
                                          None if labels is None else labels[position])
            rows.append([{"epoch": epoch, "split": "train", **row, **speed}])
        return rows

    @torch.no_grad()
    def score(self, split: EvalSplit, epoch: int, probabilities: list[dict]) -> list[list[dict]]:
        """Every trial's rows for one split, from one stacked pass over it."""
        cfg, task, device = self.ctx.cfg, self.ctx.task, self.ctx.device
        self.template.eval()
        x, y = self.data.evals[split.name]
        trials = self.stack.size
        batched = vmap(self._call, in_dims=(0, 0, None, 0), randomness="error")
        loss_sums = torch.zeros(trials, dtype=torch.float64, device=device)
        outputs = []
        start = time.perf_counter()
        for begin in range(0, x.shape[0], cfg.eval_batch_size):
            xb = x[begin : begin + cfg.eval_batch_size]
            if self.data.windows:
                xb = with_channel_axis(xb)
            yb = None if y is None else y[begin : begin + cfg.eval_batch_size]
            with autocast(device, cfg):
                out = batched(self.stack.params, self.stack.varying, xb, [])
            out = out.float()
            loss_sums += torch.stack([task.loss(out[p], xb, yb, reduction="sum").double() for p in range(trials)])
            if task.keeps_outputs:
                outputs.append(out)
        sums = loss_sums.tolist()
        kept = torch.cat(outputs, dim=1).cpu() if outputs else None
        elapsed = (time.perf_counter() - start) / trials  # rows report the group's throughput
        self.template.train()
        return [
            split_rows(task, split, epoch, sums[p], None if kept is None else kept[p], elapsed, probabilities[p])
            for p in range(trials)
        ]


# ---------------------------------------------------------------- how many trials at once


def parse_batch_trials(value: int | str) -> int | str:
    """``study.batch_trials``: "auto" or an integer >= 1 (1 = one trial at a time, as before)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"study.batch_trials must be 'auto' or an integer >= 1, got {value!r}")
    return number


def trial_memory_bytes(model: nn.Module, width: int | Sequence[int], cfg: TrainConfig) -> int:
    """A generous estimate of what one more stacked trial costs: weights, gradients and
    Adam's two moments; the activations of a training batch (every layer's output, kept
    for the backward pass, plus their gradients and temporaries: 3x); and an eval batch
    (no graph: the two largest layer outputs at a time).
    ``width``: samples per window (window models) or features per row (feature heads), or the
    shape of one row ((C, L) for windows of C leads)."""
    sample_shape = (int(width),) if np.ndim(width) == 0 else tuple(int(n) for n in width)
    if getattr(model, "input_length", None) is not None and len(sample_shape) == 1:
        sample_shape = (1, *sample_shape)  # one-lead windows
    tensors = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    outputs: list[int] = []

    def count(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output[:1].numel())

    probe = copy.deepcopy(model).cpu().eval()
    hooks = [m.register_forward_hook(count) for m in probe.modules() if not list(m.children())]
    with torch.no_grad():
        probe(torch.zeros((1, *sample_shape)))
    for hook in hooks:
        hook.remove()
    train = 3 * cfg.batch_size * sum(outputs)
    scoring = 2 * cfg.eval_batch_size * max(outputs, default=0)
    return 4 * (tensors + 3 * trainable + train + scoring)


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: the driver's count; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_batch_trials(model: nn.Module, width: int | Sequence[int], cfg: TrainConfig, n_trials: int) -> int:
    """``batch_trials: auto``: as many trials of a fraction as fit in a share of the free
    memory of the training device (all of them, for the default study on a CPU)."""
    device = prepare_device(cfg)
    budget = free_memory_bytes(device) * AUTO_MEMORY_SHARE.get(device.type, 0.25)
    fits = int(budget // max(1, trial_memory_bytes(model, width, cfg)))
    return max(1, min(n_trials, fits))


__all__ = [
    "StackedStepper", "auto_batch_trials", "fit_trials", "free_memory_bytes", "parse_batch_trials", "run_groups_once",
    "trial_memory_bytes", "unsupported_reason",
]
