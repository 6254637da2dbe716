"""Train the K bootstrap trials of one (arm, fraction) at once, as one stacked model.

:func:`fit_trials` gives the same per-trial results as K calls of
:func:`ecg_transfer.training.engine.fit` (one per trial, each on ``train_x[train_rows[k]]``
with seed ``seeds[k]``), but every optimiser step runs the K models together: their
tensors are stacked on a leading trial dimension (``torch.func.stack_module_state``)
and the model runs once per step under ``torch.func.vmap`` over ``functional_call``.
Small convolutions become K-times wider grouped ones, so a GPU launches one kernel
where it launched K, and a CPU runs fewer, larger operations.

Each trial keeps what ``fit`` gives it:

- its bootstrap sample (``train_rows[k]``, rows of the shared ``train_x``) and its data
  order, ``np.random.default_rng([seed, epoch]).permutation(n)`` as in the engine;
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
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from ecg_transfer.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import (
    FitResult,
    RunState,
    TrainConfig,
    _autocast,
    _check_split,
    _cpu_state,
    _deterministic,
    _done_payload,
    _eval_splits,
    _finished_result,
    _monitor,
    _prepare_device,
    _result,
    _resume,
    _split_rows,
    learning_rate,
)
from ecg_transfer.training.tasks import Task

logger = logging.getLogger(__name__)

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
    """What :func:`engine._cpu_state` needs of a model: one trial's ``state_dict``."""

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
        return torch.optim.Adam(list(self.params.values()), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

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
) -> list[FitResult]:
    """Train the K ``models`` together; result k equals ``fit(models[k], task,
    train_x[train_rows[k]], train_y[train_rows[k]], evals, replace(cfg, seed=seeds[k]),
    checkpoints, run_keys[k])`` (with fp32 on CPU within float rounding; see the module doc).

    ``train_x``: every training row any trial uses ((N, L) windows or (N, F) features);
    ``train_rows[k]``: trial k's rows (its bootstrap positions, repeats allowed), the same
    count for every trial. Models must share one architecture and trainable set. Runs found
    done in ``checkpoints`` are returned as stored; interrupted ones resume. Models end with
    their run's final weights (the best ones with ``cfg.restore_best``), as with ``fit``.
    ``on_epoch_end(epoch)`` runs after the epoch's checkpoints are written, and before it
    ``on_trial_epoch_end(k, epoch, history_so_far)`` for every trial k still training (what
    live tracking needs: one MLflow run per trial, fed as epochs end). In the history,
    ``samples_per_s`` is the group's throughput (windows of all K trials per second).
    """
    if not isinstance(task, Task):
        raise TypeError(f"fit_trials: task must be a Task, got {task!r}")
    trials = len(models)
    keys = list(run_keys) if run_keys is not None else [None] * trials
    if trials == 0 or len(seeds) != trials or len(train_rows) != trials or len(keys) != trials:
        raise ValueError(
            f"fit_trials: got {trials} models, {len(seeds)} seeds, {len(train_rows)} row sets and "
            f"{len(keys)} run keys; give one of each per trial"
        )
    where = f"fit_trials[{keys[0] or task.name}, {trials} trials]"
    if checkpoints is not None and not all(keys):
        raise ValueError(f"{where}: a run key per trial is needed to checkpoint")
    length = getattr(models[0], "input_length", None)
    train_y = _check_split("train", train_x, train_y, task, length, where)
    rows = [np.asarray(r, dtype=np.int64) for r in train_rows]
    sizes = {r.size for r in rows}
    if len(sizes) != 1 or min(sizes) == 0 or any(r.ndim != 1 for r in rows):
        raise ValueError(f"{where}: every trial needs the same, non-zero number of training rows, got {sorted(sizes)}")
    if any(r.min() < 0 or r.max() >= train_x.shape[0] for r in rows):
        raise ValueError(f"{where}: training rows fall outside 0..{train_x.shape[0] - 1}")
    splits = _eval_splits(evals, task, length, where)
    monitor = _monitor(cfg, task, splits, where)
    configs = [replace(cfg, seed=int(seed)) for seed in seeds]

    results: list[FitResult | None] = [None] * trials
    pending = []
    for k in range(trials):
        if checkpoints is not None and checkpoints.is_done(keys[k]):
            results[k] = _finished_result(models[k], checkpoints.load_result(keys[k]))
        else:
            pending.append(k)
    if not pending:
        return results
    reason = unsupported_reason(models[0])
    if reason:
        raise ValueError(f"{where}: this model cannot train as batched trials: {reason}; use batch_trials 1")
    _check_same_architecture(models, where)

    device = _prepare_device(cfg)
    starts: dict[int, tuple[RunState, Mapping[str, Any] | None, dict[str, Any]]] = {}
    for k in pending:
        models[k].to(device)
        optimizer = torch.optim.Adam(
            [p for p in models[k].parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        state, payload = _resume(models[k], optimizer, task, configs[k], checkpoints, keys[k], f"fit[{keys[k]}]")
        starts[k] = (state, payload, optimizer.state_dict())
    data = _DeviceData(train_x, train_y, rows, splits, length, device)
    loop = _GroupLoop(task, cfg, configs, keys, monitor, splits, data, checkpoints, device, progress, on_epoch_end,
                      on_trial_epoch_end)
    # Trials resumed from different epochs train in separate groups (one Adam step count each).
    for epoch in sorted({starts[k][0].epoch for k in pending}):
        group = [k for k in pending if starts[k][0].epoch == epoch]
        for k, result in loop.run([models[k] for k in group], group, [starts[k] for k in group]).items():
            results[k] = result
    return results


def _check_same_architecture(models: Sequence[nn.Module], where: str) -> None:
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
        self.width = train_x.shape[1]
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


class _GroupLoop:
    """The epoch loop of one group of trials that start at the same epoch."""

    def __init__(self, task, cfg, configs, keys, monitor, splits, data, checkpoints, device, progress, on_epoch_end,
                 on_trial_epoch_end=None):
        self.task, self.cfg, self.configs, self.keys = task, cfg, configs, keys
        self.monitor, self.splits, self.data = monitor, splits, data
        self.checkpoints, self.device, self.progress, self.on_epoch_end = checkpoints, device, progress, on_epoch_end
        self.on_trial_epoch_end = on_trial_epoch_end

    def run(self, models, group: list[int], starts) -> dict[int, FitResult]:
        template, dropouts = _stacked_template(models[0])
        template.train()
        stack = _TrialStack(models, template, self.cfg)
        stack.load_optimizers([start[2] for start in starts])
        self.template, self.dropouts, self.stack = template, dropouts, stack
        self.dropout_calls = self._dropout_calls(models[0])
        states = {k: start[0] for k, start in zip(group, starts)}
        payloads = {k: start[1] for k, start in zip(group, starts)}
        randoms = [_TrialRandom(self.configs[k].seed, self.device, payloads[k]) for k in group]
        active, models_of = list(group), dict(zip(group, models))
        results: dict[int, FitResult] = {}

        def finish(positions: list[int]) -> None:
            nonlocal active, randoms
            for position in positions:
                k = active[position]
                results[k] = self._finish(models_of[k], stack, position, states[k], payloads[k], k)
            remaining = [p for p in range(len(active)) if p not in positions]
            if positions and remaining:
                stack.keep(remaining)
            active = [active[p] for p in remaining]
            randoms = [randoms[p] for p in remaining]

        # A trial whose checkpoint already says "stopped" only needs finishing (as in fit).
        finish([p for p, k in enumerate(active) if states[k].stopped_early])
        first_epoch = states[group[0]].epoch
        label = self.keys[group[0]] or self.task.name
        with _deterministic(self.configs[group[0]], self.device, None), tqdm(
            range(first_epoch + 1, self.cfg.epochs + 1), total=self.cfg.epochs, initial=first_epoch,
            desc=f"{label} (+{len(group) - 1} trials)", disable=not self.progress, unit="epoch", leave=False,
        ) as epochs:
            for epoch in epochs:
                if not active:
                    break
                rows = self._train_epoch(stack, active, randoms, epoch)
                probabilities: list[dict[str, Any]] = [{} for _ in active]
                for split in self.splits.values():
                    for position, split_rows in enumerate(self._score_split(stack, split, epoch, probabilities)):
                        rows[position] += split_rows
                for position, k in enumerate(active):
                    states[k].end_epoch(epoch, rows[position], probabilities[position], self.monitor,
                                        self.cfg.patience, _TrialView(stack, position))
                    if self.checkpoints is not None:
                        self.checkpoints.save(self.keys[k], self._checkpoint(stack, position, k, states[k], randoms[position]))
                epochs.set_postfix(loss=f"{np.mean([r[0]['loss'] for r in rows]):.4g}", trials=len(active))
                if self.on_trial_epoch_end is not None:
                    for k in active:
                        self.on_trial_epoch_end(k, epoch, pd.DataFrame(states[k].history))
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch)
                finish([p for p, k in enumerate(active) if states[k].stopped_early])
        finish(list(range(len(active))))
        return results

    # ------------------------------------------------------------ pieces

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
            probe(sample.unsqueeze(1) if self.data.windows else sample)
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

    def _train_epoch(self, stack: _TrialStack, active: list[int], randoms, epoch: int) -> list[list[dict]]:
        cfg, task, data, device = self.cfg, self.task, self.data, self.device
        self.template.train()
        n, size = data.n, cfg.batch_size
        steps_per_epoch = math.ceil(n / size)
        scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
        # Each trial's order, as fit's: (seed, epoch) only, rows sorted within a batch.
        local = np.stack([
            np.concatenate([np.sort(order[b : b + size]) for b in range(0, n, size)])
            for order in (np.random.default_rng([self.configs[k].seed, epoch]).permutation(n) for k in active)
        ])
        positions = np.stack([data.rows[k][row] for k, row in zip(active, local)])
        index = torch.from_numpy(positions).to(device)
        with_labels = data.y is not None

        def step_loss(params, varying, x, y, masks):
            with _autocast(device, cfg):
                out = self._call(params, varying, x, masks)
            out = out.float()
            return task.loss(out, x, y), out

        batched = vmap(step_loss, in_dims=(0, 0, 0, 0 if with_labels else None, 0), randomness="error")
        losses, outputs = [], []
        start = time.perf_counter()
        for batch_index, begin in enumerate(range(0, n, size)):
            rows = index[:, begin : begin + size]
            xb = data.x[rows]
            if data.windows:
                xb = xb.unsqueeze(2)  # (K, B, 1, L)
            yb = data.y[rows] if with_labels else None
            masks = [torch.stack([r.mask((rows.shape[1], *shape), module.p, device) for r in randoms])
                     for module, shape in self.dropout_calls]
            loss, out = batched(stack.params, stack.varying, xb, yb, masks)
            stack.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if cfg.grad_clip > 0:
                stack.clip_gradients(cfg.grad_clip)
            if scheduled:
                rate = learning_rate(cfg, (epoch - 1) * steps_per_epoch + batch_index, steps_per_epoch)
                for group in stack.optimizer.param_groups:
                    group["lr"] = rate
            stack.optimizer.step()
            losses.append(loss.detach())
            if task.keeps_outputs:
                outputs.append(out.detach())
        values = torch.stack(losses).cpu().numpy()  # (steps, K); one transfer per epoch
        elapsed = time.perf_counter() - start
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            batch_index, position = bad[0]
            raise FloatingPointError(
                f"fit[{self.keys[active[position]] or task.name}]: training loss became "
                f"{values[batch_index, position]} at epoch {epoch}, batch {batch_index}; "
                "check the inputs for NaN/inf or lower the learning rate"
            )
        counts = [min(size, n - begin) for begin in range(0, n, size)]
        kept = torch.cat(outputs, dim=1).cpu() if outputs else None
        labels = data.labels[positions] if with_labels else None
        speed = {"samples_per_s": len(active) * n / max(elapsed, 1e-9)}
        rows = []
        for position in range(len(active)):
            loss_sum = 0.0
            for step, count in enumerate(counts):  # fit's order of float additions
                loss_sum += float(values[step, position]) * count
            row = task.train_row(loss_sum, n, data.width, None if kept is None else kept[position],
                                 None if labels is None else labels[position])
            rows.append([{"epoch": epoch, "split": "train", **row, **speed}])
        return rows

    @torch.no_grad()
    def _score_split(self, stack: _TrialStack, split, epoch: int, probabilities: list[dict]) -> list[list[dict]]:
        """Every trial's rows for one split, from one stacked pass over it."""
        cfg, task, device = self.cfg, self.task, self.device
        self.template.eval()
        x, y = self.data.evals[split.name]
        trials = stack.size
        batched = vmap(self._call, in_dims=(0, 0, None, 0), randomness="error")
        loss_sums = torch.zeros(trials, dtype=torch.float64, device=device)
        outputs = []
        start = time.perf_counter()
        for begin in range(0, x.shape[0], cfg.eval_batch_size):
            xb = x[begin : begin + cfg.eval_batch_size]
            if self.data.windows:
                xb = xb.unsqueeze(1)
            yb = None if y is None else y[begin : begin + cfg.eval_batch_size]
            with _autocast(device, cfg):
                out = batched(stack.params, stack.varying, xb, [])
            out = out.float()
            loss_sums += torch.stack([task.loss(out[p], xb, yb, reduction="sum").double() for p in range(trials)])
            if task.keeps_outputs:
                outputs.append(out)
        sums = loss_sums.tolist()
        kept = torch.cat(outputs, dim=1).cpu() if outputs else None
        elapsed = (time.perf_counter() - start) / trials  # rows report the group's throughput
        self.template.train()
        return [
            _split_rows(task, split, epoch, sums[p], None if kept is None else kept[p], elapsed, probabilities[p])
            for p in range(trials)
        ]

    def _checkpoint(self, stack: _TrialStack, position: int, k: int, state: RunState, random: _TrialRandom) -> dict:
        # The keys and layout of engine._checkpoint: fit resumes from it and vice versa.
        return {
            "task": self.task.describe(), "config": asdict(self.configs[k]),
            "model": _cpu_state(_TrialView(stack, position)), "optimizer": stack.trial_optimizer(position),
            **random.states(), **state.as_payload(),
        }

    def _finish(self, model: nn.Module, stack: _TrialStack, position: int, state: RunState, payload, k: int) -> FitResult:
        model.load_state_dict(stack.trial_state(position))
        if self.cfg.restore_best and state.best_state is not None:
            model.load_state_dict(state.best_state)
        resumed_from = payload["epoch"] if payload is not None else None
        if self.checkpoints is not None:
            self.checkpoints.mark_done(self.keys[k], _done_payload(state, self.monitor, self.device, resumed_from, model))
        return _result(state, self.monitor, str(self.device), resumed_from)


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


def trial_memory_bytes(model: nn.Module, width: int, cfg: TrainConfig) -> int:
    """A generous estimate of what one more stacked trial costs: weights, gradients and
    Adam's two moments; the activations of a training batch (every layer's output, kept
    for the backward pass, plus their gradients and temporaries: 3x); and an eval batch
    (no graph: the two largest layer outputs at a time).
    ``width``: samples per window (window models) or features per row (feature heads)."""
    sample_shape = (1, width) if getattr(model, "input_length", None) is not None else (width,)
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


def auto_batch_trials(model: nn.Module, width: int, cfg: TrainConfig, n_trials: int) -> int:
    """``batch_trials: auto``: as many trials of a fraction as fit in a share of the free
    memory of the training device (all of them, for the default study on a CPU)."""
    device = _prepare_device(cfg)
    budget = free_memory_bytes(device) * AUTO_MEMORY_SHARE.get(device.type, 0.25)
    fits = int(budget // max(1, trial_memory_bytes(model, width, cfg)))
    return max(1, min(n_trials, fits))


def run_groups_once(
    store: CheckpointStore | None,
    run_keys: Sequence[str],
    groups: Sequence[Sequence[int]],
    run_group: Callable[[list[int]], Sequence[Any]],
    timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> list[Any]:
    """:func:`~ecg_transfer.training.checkpoints.run_once` for groups of runs trained together.

    ``run_group(indices)`` trains (or reads, when done) the runs ``indices`` and returns their
    results in that order. In each group this worker claims the runs nobody else holds and
    trains them together; runs held by another live worker are waited for after all groups
    and then read (or, if their worker died, claimed and trained here, one at a time).
    """
    results: dict[int, Any] = {}
    waiting: list[int] = []
    for group in groups:
        mine, held = [], []
        try:
            for index in group:
                if store is None or store.is_done(run_keys[index]):
                    mine.append(index)
                elif store.acquire(run_keys[index]):
                    mine.append(index)
                    held.append(index)
                else:
                    logger.info("run %s is being trained by %s; collecting it after the others",
                                run_keys[index], store.claim_holder(run_keys[index]))
                    waiting.append(index)
            if mine:
                results.update(zip(mine, run_group(mine)))
        finally:
            for index in held:
                store.release(run_keys[index])
    for index in waiting:
        while index not in results:
            if store.wait_for(run_keys[index], timeout_s, poll_s):
                results[index] = run_group([index])[0]
                continue
            with store.claim(run_keys[index]) as claimed:
                if claimed:
                    results[index] = run_group([index])[0]
    return [results[index] for index in range(len(run_keys))]


__all__ = [
    "auto_batch_trials", "fit_trials", "free_memory_bytes", "parse_batch_trials", "run_groups_once",
    "trial_memory_bytes", "unsupported_reason",
]
