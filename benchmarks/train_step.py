"""Median time of one optimiser step: the GA-DMS objective against the plain CLIP (SDM) step.

Same model, same batch, same optimiser; ``gadms`` with ``online`` and ``cached`` score
timing, and ``clip``. Prints one JSON line per model with the medians (seconds) and the
ratios gadms / clip. Target (issue 3): gadms / clip <= 1.3 on ViT-B-16 at 384x128.

    python benchmarks/train_step.py                      # tiny config and ViT-B-16, batch 8 (CPU)
    python benchmarks/train_step.py --models ViT-B-16 --batch 64 --device cuda --amp bf16

The weights are random (no download needed): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gadms_cli.gadms.objective import RetrievalObjective
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer
from gadms_cli.recipe import MethodRecipe

CAPTION = (
    "A young woman with long black hair wears a red coat over a white shirt, blue jeans and black shoes, "
    "and carries a brown handbag on her left shoulder."
)


def make_batch(model, batch: int, device: str) -> dict:
    height, width = model.config.image_size
    tokens = Tokenizer(model.config.context_length)([CAPTION] * batch)
    return {
        "image": torch.randn(batch, 3, height, width, device=device),
        "tokens": tokens.to(device),
        "pid": torch.arange(batch, device=device) // 2,  # two captions per identity
        "caption": torch.arange(batch, device=device),
    }


def time_steps(objective, optimizer, batch, steps: int, warmup: int, amp: str | None, device: str) -> list[float]:
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = objective(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def measure(arch: str, image_size, batch: int, steps: int, warmup: int, device: str, amp: str | None) -> dict:
    torch.manual_seed(0)
    model = create_person_clip(arch=arch, image_size=image_size, with_mtp=True, device=device)
    data = make_batch(model, batch, device)
    methods = {
        "clip": MethodRecipe(name="clip"),
        "gadms_online": MethodRecipe(name="gadms", score_timing="online"),
        "gadms_cached": MethodRecipe(name="gadms", score_timing="cached"),
    }
    medians = {}
    for label, method in methods.items():
        objective = RetrievalObjective(model, method, num_captions=batch).to(device).train()
        optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5, fused=True)
        medians[label] = statistics.median(time_steps(objective, optimizer, data, steps, warmup, amp, device))
    return {
        "model": arch,
        "image_size": list(model.config.image_size),
        "batch": batch,
        "device": device,
        "amp": amp or "fp32",
        "threads": torch.get_num_threads(),
        "median_step_s": {k: round(v, 4) for k, v in medians.items()},
        "ratio_online_vs_clip": round(medians["gadms_online"] / medians["clip"], 3),
        "ratio_cached_vs_clip": round(medians["gadms_cached"] / medians["clip"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gadms-tiny", "ViT-B-16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["bf16"], default=None)
    args = parser.parse_args()
    for arch in args.models:
        size = (384, 128) if arch.startswith("ViT") else None
        print(json.dumps(measure(arch, size, args.batch, args.steps, args.warmup, args.device, args.amp)), flush=True)


if __name__ == "__main__":
    main()
