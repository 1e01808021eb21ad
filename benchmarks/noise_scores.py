"""Does the token score find the noise? Written-wrong words against the caption's CORRECT words.

SketchPedes (``gadms synth --noise``) records every corruption in ``attributes.jsonl``. For
the training captions with exactly one locatable edit, this compares the score of the noise
word(s) with the scores of the correct attribute words of the SAME caption
(``gadms_cli/data/synth/noise_words.py``):

- ``wrong_colour``: the written-wrong colour against the caption's correct colour words;
- ``wrong_type``: the written-wrong garment / bag / hat / hair type against the correct type words;
- ``irrelevant_phrase``: the inserted phrase's tokens against every correct colour and type word.

Function words ("a", "the") are left out of the comparison on purpose: a good score ranks
them low too, and masking them costs nothing.

Figures, per noise kind (``P(lower)``: the probability that a noise token scores strictly
below a correct attribute token of its caption, ties counted half; 0.5 is chance):

- per GA layer set (each single layer, the last k layers), with and without the ReLU;
- the plain similarity score and the exact leave-one-out attribution (the ceiling:
  ``gadms_cli/gadms/attribution.py``);
- per masking calibration (ReLU on/off x ``batch`` / ``sample`` / ``rank`` normalisation,
  and the signed score ``centered``, over ``--layers``; leave-one-out through ``sample`` and
  ``centered`` as the ceiling): the mean noise-masking probability of noise tokens, of the
  correct attribute tokens, their ratio, and the expected noise-masked tokens per caption.

Captions are scored in random batches of ``--batch`` pairs drawn from the whole train split
(clean or not), as training scores them (``batch`` normalisation depends on the batch).

    python benchmarks/noise_scores.py --model MODEL --sketchpedes DATA [--layers all] [--out docs/results/NAME]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: see cli.py

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gadms_cli.data.benchmarks import load_benchmark  # noqa: E402
from gadms_cli.data.synth.noise_words import COMPARED_WITH, lower_probability, noise_positions, word_positions  # noqa: E402
from gadms_cli.data.transforms import eval_transform  # noqa: E402
from gadms_cli.data.train_dataset import load_rgb  # noqa: E402
from gadms_cli.fileio import atomic_write  # noqa: E402
from gadms_cli.gadms.attribution import leave_one_out_scores  # noqa: E402
from gadms_cli.gadms.ga_score import (  # noqa: E402
    content_mask,
    ga_score_terms,
    normalize_scores,
    resolve_score_layers,
    similarity_token_scores,
)
from gadms_cli.gadms.ga_score_public import public_ga_token_scores  # noqa: E402
from gadms_cli.gadms.masking import noise_mask_probability  # noqa: E402
from gadms_cli.model.checkpoint import load_checkpoint  # noqa: E402
from gadms_cli.model.tokenizer import Tokenizer  # noqa: E402

CALIBRATIONS = [*((relu, norm) for relu in (True, False) for norm in ("batch", "sample", "rank")), (False, "centered")]


def load_pairs(root: Path, tokenizer: Tokenizer) -> list[dict]:
    """Every train (image, caption) pair; single-edit captions carry ``kind``, ``noise`` and ``attr`` positions."""
    bench = load_benchmark(root, check_images=False)
    text_of = {image.relative_path: image.captions for image in bench.images("train")}
    pairs = []
    with open(root / "attributes.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] != "train":
                continue
            for caption, info in zip(text_of[record["file_path"]], record["captions"]):
                pair = {"image": root / "imgs" / record["file_path"], "caption": caption, "kind": None}
                if len(info["edits"]) == 1 and info["edits"][0]["kind"] in COMPARED_WITH:
                    edit = info["edits"][0]
                    noise = noise_positions(tokenizer, caption, edit)
                    attr = word_positions(tokenizer, caption, COMPARED_WITH[edit["kind"]], exclude=noise or [])
                    if noise and attr:
                        pair.update(kind=edit["kind"], noise=noise, attr=attr)
                pairs.append(pair)
    return pairs


class Tally:
    """Wins / comparisons of P(lower) and masking probabilities, per (kind, name)."""

    def __init__(self) -> None:
        self.wins: dict = defaultdict(float)
        self.pairs: dict = defaultdict(int)
        self.p_noise: dict = defaultdict(list)
        self.p_attr: dict = defaultdict(list)
        self.masked: dict = defaultdict(list)

    def rank(self, name: str, scores: torch.Tensor, chunk: list[dict]) -> None:
        for i, pair in enumerate(chunk):
            if pair["kind"] is None:
                continue
            row = scores[i].tolist()
            wins, n = lower_probability([row[q] for q in pair["noise"]], [row[q] for q in pair["attr"]])
            for kind in (pair["kind"], "all"):
                self.wins[kind, name] += wins
                self.pairs[kind, name] += n

    def mask(self, name: str, prob: torch.Tensor, chunk: list[dict]) -> None:
        self.masked["all", name].append(prob.sum(1).mean().item())
        for i, pair in enumerate(chunk):
            if pair["kind"] is None:
                continue
            for kind in (pair["kind"], "all"):
                self.p_noise[kind, name] += prob[i, pair["noise"]].tolist()
                self.p_attr[kind, name] += prob[i, pair["attr"]].tolist()


def score_batch(model, tally: Tally, chunk: list[dict], tokenizer, transform, layers) -> None:
    images = torch.stack([transform(load_rgb(p["image"])) for p in chunk])
    tokens = tokenizer([p["caption"] for p in chunk])
    tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
    with torch.no_grad():
        feats = model.encode_image(images)
    depth = len(model.clip.transformer.resblocks)
    terms = ga_score_terms(model, feats, tokens, "all")
    products = terms.layer_products()  # depth order: products[j] is block j
    content = content_mask(tokens).float()
    for j in range(depth):
        tally.rank(f"GA layer {j + 1} only", products[j], chunk)
    for k in range(1, depth + 1):
        total = sum(products[depth - k :]) * content
        tally.rank(f"GA last {k} of {depth}, signed", total, chunk)
        tally.rank(f"GA last {k} of {depth}, ReLU", torch.relu(total), chunk)
    tally.rank(f"GA as the public code computes it (last {layers} layers)", public_ga_token_scores(model, feats, tokens, layers), chunk)
    tally.rank("similarity score", similarity_token_scores(model, feats, tokens, "sample"), chunk)
    loo = leave_one_out_scores(model, feats, tokens)
    tally.rank("leave-one-out (ceiling)", loo, chunk)
    chosen = sum(products[depth - layers :]) * content
    for relu, norm in CALIBRATIONS:
        scores = normalize_scores(torch.relu(chosen) if relu else chosen, content.bool(), norm)
        prob = noise_mask_probability(scores) * content
        tally.mask(f"{'ReLU' if relu else 'signed'}, {norm}", prob, chunk)
    public = public_ga_token_scores(model, feats, tokens, layers)
    tally.mask("public code's score", noise_mask_probability(public) * content, chunk)
    for norm in ("sample", "centered"):  # the ceiling: the exact attribution through the same masking
        tally.mask(f"leave-one-out, {norm}", noise_mask_probability(normalize_scores(loo, content.bool(), norm)) * content, chunk)


def summarise(tally: Tally) -> dict:
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    kinds = ["all", *COMPARED_WITH]
    ranking = {kind: {name: round(tally.wins[k, name] / tally.pairs[k, name], 3)
                      for (k, name) in tally.pairs if k == kind and tally.pairs[k, name]} for kind in kinds}
    masking = {}
    for (kind, name), values in tally.p_noise.items():
        p_noise, p_attr = mean(values), mean(tally.p_attr[kind, name])
        masking.setdefault(kind, {})[name] = {
            "p_noise": round(p_noise, 4), "p_attr": round(p_attr, 4),
            "ratio": round(p_noise / p_attr, 2) if p_attr else None,
            "masked_per_caption": round(mean(tally.masked["all", name]), 2),
        }
    return {"P_lower": ranking, "masking": masking}


def markdown(result: dict, args: argparse.Namespace, counts: dict) -> str:
    kinds = [k for k in ("all", *COMPARED_WITH) if result["P_lower"].get(k)]
    lines = [
        "# Does the token score find the noise? (SketchPedes)", "",
        f"Made by `{result['command']}` on {result['date']}.", "",
        f"Model `{args.model}`, data `{args.sketchpedes}`, {result['batches']} batches of {args.batch}; "
        f"noise captions compared: {', '.join(f'{k} {v}' for k, v in counts.items())}.", "",
        "P(lower): probability that a noise token scores strictly below a CORRECT attribute word of the same "
        "caption (ties count half; 0.5 = chance).", "",
        "| score | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds),
    ]
    for name in result["P_lower"]["all"]:
        lines.append(f"| {name} | " + " | ".join(f"{result['P_lower'][k].get(name, float('nan')):.3f}" for k in kinds) + " |")
    lines += ["", f"Noise masking (alpha 0.2, lambda 20, gamma 0.9) over the last {result['layers']} GA layers, "
              "all noise kinds: mean masking probability of noise tokens and of correct attribute tokens.", "",
              "| calibration | p(noise) | p(correct attribute) | ratio | noise-masked tokens per caption |", "|---|---|---|---|---|"]
    for name, row in result["masking"]["all"].items():
        lines.append(f"| {name} | {row['p_noise']:.4f} | {row['p_attr']:.4f} | {row['ratio']} | {row['masked_per_caption']} |")
    lines += ["", "The same per noise kind: p(noise) / p(correct attribute) = ratio.", "",
              "| calibration | " + " | ".join(kinds[1:]) + " |", "|---|" + "---|" * len(kinds[1:])]
    for name in result["masking"]["all"]:
        cells = []
        for kind in kinds[1:]:
            row = result["masking"].get(kind, {}).get(name)
            cells.append("-" if row is None else f"{row['p_noise']:.3f} / {row['p_attr']:.3f} = {row['ratio']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a gadms model folder")
    parser.add_argument("--sketchpedes", type=Path, required=True, help="a SketchPedes folder with caption noise")
    parser.add_argument("--layers", default="all", help="GA layers for the masking table: a count, a fraction or 'all'")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json (e.g. docs/results/noise-scores-base)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    model = load_checkpoint(args.model).eval()
    depth = len(model.clip.transformer.resblocks)
    layers_arg = args.layers if args.layers == "all" else (float(args.layers) if "." in args.layers else int(args.layers))
    layers = resolve_score_layers(layers_arg, depth)
    tokenizer = Tokenizer(model.config.context_length)
    transform = eval_transform(tuple(model.config.image_size))
    pairs = load_pairs(args.sketchpedes, tokenizer)
    random.Random(args.seed).shuffle(pairs)
    tally, batches, counts = Tally(), 0, defaultdict(int)
    for b in range(args.batches):
        chunk = pairs[b * args.batch : (b + 1) * args.batch]
        if len(chunk) < args.batch:
            break
        score_batch(model, tally, chunk, tokenizer, transform, layers)
        batches += 1
        for pair in chunk:
            if pair["kind"]:
                counts[pair["kind"]] += 1
    result = {
        "command": "python benchmarks/noise_scores.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "batches": batches, "layers": layers, "depth": depth, "captions": dict(counts), **summarise(tally),
    }
    text = markdown(result, args, dict(counts))
    print(text)
    if args.out is not None:
        with atomic_write(args.out.with_suffix(".json")) as handle:
            json.dump(result, handle, indent=1)
        with atomic_write(args.out.with_suffix(".md")) as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
