"""Optimiser parameter groups and the learning-rate schedule (METHOD.md "Training recipes").

Parameter groups follow IRRA, which the GA-DMS recipes reuse:
- new modules (the MTP decoder and the identity classifier) get ``lr * new_module_lr_mult``;
- biases (only biases, as IRRA; LayerNorm gains are ordinary weights) get
  ``lr * bias_lr_mult`` and ``bias_weight_decay``;
- everything else gets ``lr`` and ``weight_decay``.

The schedule is per optimiser step: linear warm-up from ``warmup_start_factor * lr`` to
``lr`` over the warm-up steps, then a cosine from ``lr`` down to ``min_lr``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gadms_cli.recipe import OptimRecipe

NEW_MODULE_PREFIXES = ("mtp.", "classifier.")


def param_groups(model: nn.Module, optim: OptimRecipe, new_module_prefixes: tuple[str, ...] = NEW_MODULE_PREFIXES) -> list[dict]:
    """Split trainable parameters into groups with their own lr and weight decay.

    Groups with the same (lr, weight decay) are merged, so there are at most four.
    Each group carries ``base_lr`` (its peak learning rate) for the scheduler.
    """
    buckets: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, decay = optim.lr, optim.weight_decay
        if name.startswith(new_module_prefixes):
            lr = optim.lr * optim.new_module_lr_mult
        if name.endswith(".bias"):
            lr = lr * optim.bias_lr_mult
            decay = optim.bias_weight_decay
        buckets.setdefault((lr, decay), []).append(param)
    return [
        {"params": params, "lr": lr, "base_lr": lr, "weight_decay": decay}
        for (lr, decay), params in sorted(buckets.items())
    ]


def build_optimizer(model: nn.Module, optim: OptimRecipe) -> torch.optim.Optimizer:
    """Adam (the paper's, with L2 weight decay) or AdamW (decoupled decay) over :func:`param_groups`."""
    groups = param_groups(model, optim)
    cls = torch.optim.Adam if optim.optimizer == "adam" else torch.optim.AdamW
    # The fused kernel (CPU and CUDA) is several times faster than the per-tensor loop,
    # which matters here: the 49408-row token embedding and MTP head are large.
    return cls(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, start_factor: float, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimiser ``step`` (0-based): linear warm-up, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimRecipe, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule; ``optim.warmup_epochs`` is converted to steps."""
    warmup_steps = min(total_steps, int(round(optim.warmup_epochs * steps_per_epoch)))
    min_ratio = optim.min_lr / optim.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps, warmup_steps, optim.warmup_start_factor, min_ratio),
    )
