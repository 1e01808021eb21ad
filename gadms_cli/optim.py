"""Optimiser parameter groups and the learning-rate schedule (docs/method.md "Optimisation").

``optim.groups: irra`` (the default) applies IRRA's rules, in IRRA's order, to each
parameter name (``lr``, ``wd``: the recipe's ``optim.lr`` and ``optim.weight_decay``):

1. every parameter: ``lr``, ``wd``;
2. a name containing ``cross`` (the MTP decoder's cross-attention and transformer):
   ``lr * new_module_lr_mult``;
3. a name containing ``bias`` (so also the attention ``in_proj_bias``): ``lr * bias_lr_mult``
   and ``bias_weight_decay``, REPLACING rule 2's lr (a cross-attention bias gets 2x, not 10x);
4. a name containing ``classifier`` or ``mlm_head``: ``lr * new_module_lr_mult`` (its bias
   keeps rule 3's decay).

The decoder's LayerNorms (``ln_pre_t``, ``ln_pre_i``, ``ln_post``) match no rule and get ``lr``,
as in IRRA. ``optim.groups: uniform`` gives every parameter ``lr`` and ``wd``: the public GA-DMS
pretraining script (weight decay 4e-5).

The schedule is per optimiser step: linear warm-up from ``warmup_start_factor * lr`` to
``lr`` over the warm-up steps, then a cosine from ``lr`` down to ``min_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Literal

import torch
from pydantic import Field, with_config
from torch import nn

from gadms_cli.config_checks import RECIPE_CONFIG


@with_config(RECIPE_CONFIG)
@dataclass
class OptimRecipe:
    """The optimiser's configuration: the ``optim`` section of a recipe (owned here, read by the recipe)."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-4
    weight_decay: Annotated[float, Field(ge=0)] = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    groups: Literal["irra", "uniform"] = "irra"  # irra: IRRA's per-name rules; uniform: one lr and decay (public GA-DMS pretraining)
    new_module_lr_mult: Annotated[float, Field(ge=0)] = 5.0  # decoder and classifier (IRRA)
    bias_lr_mult: Annotated[float, Field(ge=0)] = 2.0
    bias_weight_decay: Annotated[float, Field(ge=0)] = 0.0
    warmup_epochs: Annotated[float, Field(ge=0)] = 5.0
    warmup_start_factor: Annotated[float, Field(ge=0)] = 0.1
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: Annotated[float, Field(gt=0, description="or null: no clipping")] | None = None


def parameter_lr_and_decay(name: str, optim: OptimRecipe) -> tuple[float, float]:
    """(learning rate, weight decay) of the parameter called ``name`` (see the module docstring)."""
    lr, decay = optim.lr, optim.weight_decay
    if optim.groups == "uniform":
        return lr, decay
    if "cross" in name:
        lr = optim.lr * optim.new_module_lr_mult
    if "bias" in name:
        lr, decay = optim.lr * optim.bias_lr_mult, optim.bias_weight_decay
    if "classifier" in name or "mlm_head" in name:
        lr = optim.lr * optim.new_module_lr_mult
    return lr, decay


def param_groups(model: nn.Module, optim: OptimRecipe) -> list[dict]:
    """Split trainable parameters into groups with their own lr and weight decay.

    Groups with the same (lr, weight decay) are merged. Each group carries ``base_lr``
    (its peak learning rate) for the scheduler.
    """
    buckets: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            buckets.setdefault(parameter_lr_and_decay(name, optim), []).append(param)
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
    optimizer: torch.optim.Optimizer, optim: OptimRecipe, total_steps: int, steps_per_epoch: int,
    time_share: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule; ``optim.warmup_epochs`` is converted to steps.

    ``time_share`` (``train.time_schedule``): a function giving the share of the time budget used
    so far (0..1); the schedule is then at step ``max(step, time_share() * total_steps)``, so a slow
    machine goes through the same warm-up and cosine in fewer steps and ends at ``min_lr``.
    """
    warmup_steps = min(total_steps, int(round(optim.warmup_epochs * steps_per_epoch)))
    min_ratio = optim.min_lr / optim.lr

    def factor(step: int) -> float:
        if time_share is not None:
            step = max(step, int(time_share() * total_steps))
        return lr_factor(step, total_steps, warmup_steps, optim.warmup_start_factor, min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
