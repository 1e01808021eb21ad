"""Which SketchPedes attributes a model's image embedding holds: linear probes, train -> test.

Text search can only find "a man carrying a backpack" if the image embedding says
"man" and "backpack". For each attribute predicate below, a logistic regression on the
L2-normalised image embeddings of the ``train`` split predicts the predicate on the
``test`` split (true labels from ``attributes.jsonl``). Reported: test accuracy, the
majority-class accuracy, and balanced accuracy (mean of the true-positive and
true-negative rates; 0.5 = the embedding tells nothing). Colour predicates are the
control: a model that learnt anything learnt those. The same probe on the raw pixels
(each image shrunk to 48x16, each pixel value standardised) shows what a linear
read-out of the images themselves can find.

Usage::

    python benchmarks/attribute_probe.py --model RUN_DIR --sketchpedes DIR [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch


def _item(attributes: dict, slot: str, field: str) -> str | None:
    return (attributes.get(slot) or {}).get(field)


PREDICATES: dict[str, Callable[[dict], bool]] = {
    "woman": lambda a: a["gender"] == "female",
    "long hair": lambda a: _item(a, "hair", "type") == "long",
    "black hair": lambda a: _item(a, "hair", "colour") == "black",
    "any bag": lambda a: a.get("bag") is not None,
    "backpack": lambda a: _item(a, "bag", "type") == "backpack",
    "hat": lambda a: a.get("hat") is not None,
    "dress": lambda a: _item(a, "top", "type") == "dress",
    "jeans": lambda a: _item(a, "bottom", "type") == "jeans",
    "shorts": lambda a: _item(a, "bottom", "type") == "shorts",
    "red top (control)": lambda a: _item(a, "top", "colour") == "red",
    "blue bottom (control)": lambda a: _item(a, "bottom", "colour") == "blue",
}


def standardised(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """[train, test] features scaled to zero mean, unit variance per dimension by the train split's statistics."""
    mean, std = features[0].mean(0), features[0].std(0) + 1e-3
    return [(f - mean) / std for f in features]


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-4, iterations: int = 300):
    """Logistic regression by L-BFGS: returns (weights [D], bias []) minimising class-balanced BCE + l2 * |w|^2.

    features: float32 [N, D]; labels: float32 [N] of 0/1. Positives and negatives weigh half
    the loss each, so a rare attribute is not ignored (balanced accuracy is the score).
    """
    positives = labels.mean().clamp(1e-3, 1 - 1e-3)
    sample_weights = torch.where(labels > 0.5, 0.5 / positives, 0.5 / (1 - positives))
    weights = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        logits = features @ weights + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=sample_weights) + l2 * weights.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weights.detach(), bias.detach()


def probe_scores(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, majority-class accuracy and balanced accuracy of 0/1 predictions (bool [N] each)."""
    positives = labels.sum().item() / len(labels)
    true_positive = (predicted & labels).sum().item() / max(1, labels.sum().item())
    true_negative = (~predicted & ~labels).sum().item() / max(1, (~labels).sum().item())
    return {
        "accuracy": (predicted == labels).sum().item() / len(labels),
        "majority": max(positives, 1 - positives),
        "balanced_accuracy": (true_positive + true_negative) / 2,
    }


def pixel_features(paths: list[Path], size: tuple[int, int] = (48, 16)) -> torch.Tensor:
    """Images shrunk to ``size`` (height, width), RGB in [0, 1], flattened: float32 [N, 3 * H * W]."""
    from PIL import Image

    from gadms_cli.data.train_dataset import load_rgb

    rows = []
    for path in paths:
        small = load_rgb(path).resize((size[1], size[0]), Image.BILINEAR)
        rows.append(torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).float() / 255)
    return torch.stack(rows)


def split_of(folder: Path, split: str) -> tuple[list[dict], list[Path]]:
    """(attributes, image paths) of one split of a SketchPedes folder."""
    lines = (folder / "attributes.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [r for r in map(json.loads, filter(None, lines)) if r["split"] == split]
    if not rows:
        raise SystemExit(f"no '{split}' images in {folder / 'attributes.jsonl'}")
    return [r["attributes"] for r in rows], [folder / "imgs" / r["file_path"] for r in rows]


def probe(retriever, train_folder: Path, test_folder: Path, with_pixels: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """Probe scores per feature kind ("embedding", "pixels") and predicate: fit on train_folder's train split, score on test_folder's test split."""
    (train_attributes, train_paths), (test_attributes, test_paths) = split_of(train_folder, "train"), split_of(test_folder, "test")
    features = {"embedding": [
        torch.nn.functional.normalize(retriever.encode_image_files(paths).float(), dim=-1)
        for paths in (train_paths, test_paths)
    ]}
    if with_pixels:
        features["pixels"] = [pixel_features(paths) for paths in (train_paths, test_paths)]
    # Every feature set standardised per dimension with the train statistics: an L2-normalised
    # embedding varies by ~1e-2 per dimension, where L-BFGS stops at its gradient tolerance
    # before it has moved (it then predicts the majority class everywhere).
    features = {kind: standardised(pair) for kind, pair in features.items()}
    results: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in features}
    for name, predicate in PREDICATES.items():
        train_labels = torch.tensor([predicate(a) for a in train_attributes])
        test_labels = torch.tensor([predicate(a) for a in test_attributes])
        for kind, (train_features, test_features) in features.items():
            weights, bias = fit_logistic(train_features, train_labels.float(), l2=1e-2)
            results[kind][name] = probe_scores(test_features @ weights + bias > 0, test_labels)
    return results


def probe_folder(model_dir: Path, train_folder: Path, test_folder: Path) -> dict[str, float]:
    """Balanced accuracy of the embedding probe per predicate (for other scripts)."""
    from gadms_cli.retrieve import Retriever

    results = probe(Retriever(model_dir), train_folder, test_folder, with_pixels=False)
    return {name: round(scores["balanced_accuracy"], 3) for name, scores in results["embedding"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="run dir / checkpoint (default: $GADMS_MODEL, then the quickstart's)")
    parser.add_argument("--sketchpedes", type=Path, required=True, help="folder written by 'gadms synth --out'")
    parser.add_argument("--test-sketchpedes", type=Path, default=None, help="take the test images from this folder instead")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from gadms_cli import progress
    from gadms_cli.fileio import atomic_write
    from gadms_cli.retrieve import Retriever

    progress.enable(True)
    retriever = Retriever(args.model)
    results = probe(retriever, args.sketchpedes, args.test_sketchpedes or args.sketchpedes)

    table = Table(title=f"linear probes, model {retriever.model_name} (fit on train, scored on test)")
    for column in ("attribute", "majority", "embedding accuracy", "embedding balanced", "pixels balanced"):
        table.add_column(column, justify="left" if column == "attribute" else "right")
    for name in PREDICATES:
        e, p = results["embedding"][name], results["pixels"][name]
        table.add_row(name, f"{e['majority']:.2f}", f"{e['accuracy']:.2f}", f"{e['balanced_accuracy']:.2f}",
                      f"{p['balanced_accuracy']:.2f}")
    Console().print(table)
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump({"model": retriever.model_name, "probes": results}, handle, indent=1)


if __name__ == "__main__":
    main()
