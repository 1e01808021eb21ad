"""Can the image tower learn SketchPedes' person details at all? Direct supervision, no captions.

Short queries ("a woman with a backpack") need an image embedding that holds gender, hair and
bags; the linear probes of ``attribute_probe.py`` find them at chance after contrastive training.
This script takes captions out of the question: it trains an image encoder directly on the
attribute labels of ``attributes.jsonl`` (binary cross-entropy, four heads: woman, long hair,
any bag, dress) for ``--steps`` steps of batch 32, and reports balanced accuracy on the val
split. Two encoders, same data and budget:

- ``vit``: the image tower of a gadms architecture (default ``gadms-small``: ViT, patch 16,
  width 128, 3 layers, random init), as in the quickstart;
- ``cnn``: a 6-layer convolutional net with batch norm (about 0.4 M parameters).

Usage::

    python benchmarks/attribute_learnability.py --sketchpedes DIR [--steps 300 1500] [--arch gadms-small] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

LABELS = {
    "woman": lambda a: a["gender"] == "female",
    "long hair": lambda a: a["hair"]["type"] == "long",
    "any bag": lambda a: a["bag"] is not None,
    "dress": lambda a: a["top"]["type"] == "dress",
}


def small_cnn(outputs: int) -> torch.nn.Module:
    def block(cin: int, cout: int, stride: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())

    return torch.nn.Sequential(block(3, 32, 2), block(32, 64, 2), block(64, 64, 1), block(64, 128, 2), block(128, 128, 1),
                               block(128, 128, 2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(128, outputs))


def balanced_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the true-positive and true-negative rates (bool [N] each); 0.5 = chance."""
    positive = labels.sum().clamp(min=1)
    negative = (~labels).sum().clamp(min=1)
    return float(((predicted & labels).sum() / positive + (~predicted & ~labels).sum() / negative) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sketchpedes", type=Path, required=True, help="a folder written by gadms synth (train and val splits)")
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1500])
    parser.add_argument("--arch", default="gadms-small")
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from PIL import Image

    from gadms_cli.api import create_model_and_transforms

    lines = [json.loads(line) for line in (args.sketchpedes / "attributes.jsonl").read_text().splitlines() if line]
    train = [r for r in lines if r["split"] == "train"][: args.train_images]
    val = [r for r in lines if r["split"] == "val"]
    if not train or not val:
        raise SystemExit(f"{args.sketchpedes}: needs train and val images (gadms synth --val-ids N)")
    _, preprocess, _ = create_model_and_transforms(args.arch)

    def load(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([preprocess(Image.open(args.sketchpedes / "imgs" / r["file_path"]).convert("RGB")) for r in rows])
        labels = torch.tensor([[fn(r["attributes"]) for fn in LABELS.values()] for r in rows], dtype=torch.float32)
        return pixels, labels

    (x_train, y_train), (x_val, y_val) = load(train), load(val)
    results = []
    for steps in args.steps:
        for kind in ("vit", "cnn"):
            torch.manual_seed(0)
            if kind == "vit":
                model, _, _ = create_model_and_transforms(args.arch)
                encoder, width = model.clip.visual, model.config.clip_config["embed_dim"]
                net = torch.nn.Sequential(encoder, torch.nn.Linear(width, len(LABELS)))
                lr = 5e-4
            else:
                net, lr = small_cnn(len(LABELS)), 1e-3
            optimiser = torch.optim.AdamW(net.parameters(), lr=lr)
            generator = torch.Generator().manual_seed(0)
            started = time.perf_counter()
            net.train()
            for _ in range(steps):
                batch = torch.randint(len(x_train), (32,), generator=generator)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x_train[batch]), y_train[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            net.eval()
            with torch.no_grad():
                predicted = net(x_val) > 0
            scores = {name: round(balanced_accuracy(predicted[:, j], y_val[:, j] > 0.5), 3) for j, name in enumerate(LABELS)}
            results.append({"encoder": kind, "steps": steps, "seconds": round(time.perf_counter() - started, 1), "balanced_accuracy": scores})
            print(f"{kind:4s} {steps:5d} steps ({results[-1]['seconds']:.0f} s): " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sketchpedes": str(args.sketchpedes), "arch": args.arch, "results": results}, indent=1) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
