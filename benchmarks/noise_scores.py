"""Does the token score find the noise? Scores of the corrupted words in SketchPedes captions.

SketchPedes (``gadms synth --noise``) records every corruption it made in
``attributes.jsonl``: a wrong colour or garment type written in place of the true one, or an
irrelevant phrase appended. Those words are noise by construction, so a token score that
serves noise masking should give them LOWER scores than the caption's other words.

For the corrupted training captions of a SketchPedes folder, in batches like training
(``--batch`` pairs drawn at random from the whole train split, corrupted or not), this
scores every caption with a trained model and reports, per score (GA over the model's
last ``--layers`` text layers, and the plain similarity score) and per normalisation
(``batch``: min-max over the batch, the public code; ``sample``: per caption):

- ``auc_noise_lower``: the probability that a noise token scores lower than a clean
  token of the same caption (0.5: the score ignores noise; 1: every noise token lowest);
- ``p_noise`` / ``p_clean``: the mean noise-masking probability (METHOD.md, alpha 0.2,
  lambda 20, gamma 0.9) of noise tokens and of the other tokens;
- ``masked_per_caption``: expected noise-masked tokens per caption.

A written word that occurs more than once in its caption (so which occurrence is wrong is
unknown) is left out.

    python benchmarks/noise_scores.py --model gadms-quickstart/model --sketchpedes gadms-quickstart/sketchpedes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: see cli.py

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gadms_cli.data.benchmarks import load_benchmark  # noqa: E402
from gadms_cli.data.transforms import eval_transform  # noqa: E402
from gadms_cli.gadms.ga_score import ga_token_scores, similarity_token_scores  # noqa: E402
from gadms_cli.gadms.masking import maskable_positions, noise_mask_probability  # noqa: E402
from gadms_cli.model.checkpoint import load_checkpoint  # noqa: E402
from gadms_cli.model.tokenizer import Tokenizer  # noqa: E402

NOISE_KINDS = ("wrong_colour", "wrong_type", "irrelevant_phrase")


def find_once(haystack: list[int], needle: list[int]) -> int | None:
    """Start of the single occurrence of ``needle`` in ``haystack``; None if absent or repeated."""
    starts = [i for i in range(len(haystack) - len(needle) + 1) if haystack[i : i + len(needle)] == needle]
    return starts[0] if len(starts) == 1 else None


def noise_positions(tokenizer: Tokenizer, caption: str, edits: list[dict]) -> list[int] | None:
    """Token positions (BOS at 0) of the caption's noise words; None if one cannot be located."""
    ids = tokenizer.encode(caption)
    positions: list[int] = []
    for edit in edits:
        if edit["kind"] not in NOISE_KINDS:
            continue
        text = edit["phrase"] if edit["kind"] == "irrelevant_phrase" else edit["written"]
        needle = tokenizer.encode(text)
        start = find_once(ids, needle) if needle else None
        if start is None:
            return None
        positions += [1 + start + k for k in range(len(needle))]  # +1: BOS
    return positions


def load_pairs(root: Path, tokenizer: Tokenizer) -> list[dict]:
    """Every train (image, caption) pair with the positions of its noise tokens (empty when clean)."""
    bench = load_benchmark(root, check_images=False)
    text_of = {image.relative_path: image.captions for image in bench.images("train")}
    pairs = []
    with open(root / "attributes.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] != "train":
                continue
            for caption, info in zip(text_of[record["file_path"]], record["captions"]):
                noise = noise_positions(tokenizer, caption, info["edits"]) if info["corrupted"] else []
                if noise is None or (info["corrupted"] and not noise):
                    continue  # dropped words only, or an ambiguous word: nothing to locate
                pairs.append({"image": root / "imgs" / record["file_path"], "caption": caption, "noise": noise})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a gadms model folder (e.g. gadms-quickstart/model)")
    parser.add_argument("--sketchpedes", type=Path, required=True, help="the SketchPedes folder it was trained on")
    parser.add_argument("--layers", type=int, default=2, help="GA score layers (the quickstart recipe's score_layers)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_checkpoint(args.model).eval()
    tokenizer = Tokenizer(model.config.context_length)
    transform = eval_transform(tuple(model.config.image_size))
    pairs = load_pairs(args.sketchpedes, tokenizer)
    random.Random(args.seed).shuffle(pairs)
    scorers = {
        "ga": lambda feats, tokens, norm: ga_token_scores(model, feats, tokens, args.layers, norm),
        "similarity": lambda feats, tokens, norm: similarity_token_scores(model, feats, tokens, norm),
    }
    stats = {(s, n): {"wins": 0.0, "comparisons": 0, "p_noise": [], "p_clean": [], "masked": []}
             for s in scorers for n in ("batch", "sample")}
    for b in range(args.batches):
        chunk = pairs[b * args.batch : (b + 1) * args.batch]
        if len(chunk) < args.batch:
            break
        images = torch.stack([transform(Image.open(p["image"]).convert("RGB")) for p in chunk])
        tokens = tokenizer([p["caption"] for p in chunk])
        with torch.no_grad():
            feats = model.encode_image(images)
        maskable = maskable_positions(tokens)
        for (score_name, norm), acc in stats.items():
            scores = scorers[score_name](feats, tokens, norm)
            prob = noise_mask_probability(scores) * maskable
            acc["masked"].append(prob.sum(1).mean().item())
            for i, pair in enumerate(chunk):
                if not pair["noise"]:
                    continue
                noise = torch.zeros_like(maskable[i])
                noise[[q for q in pair["noise"] if q < tokens.shape[1]]] = True
                noise &= maskable[i]
                clean = maskable[i] & ~noise
                if not noise.any() or not clean.any():
                    continue
                s_noise, s_clean = scores[i][noise], scores[i][clean]
                diff = s_clean.unsqueeze(0) - s_noise.unsqueeze(1)  # [noise, clean]
                acc["wins"] += (diff > 0).sum().item() + 0.5 * (diff == 0).sum().item()
                acc["comparisons"] += diff.numel()
                acc["p_noise"] += prob[i][noise].tolist()
                acc["p_clean"] += prob[i][clean].tolist()
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    for (score_name, norm), acc in stats.items():
        print(json.dumps({
            "score": score_name, "normalize": norm,
            "auc_noise_lower": round(acc["wins"] / max(acc["comparisons"], 1), 3),
            "p_noise": round(mean(acc["p_noise"]), 3), "p_clean": round(mean(acc["p_clean"]), 3),
            "masked_per_caption": round(mean(acc["masked"]), 2),
            "noise_tokens": len(acc["p_noise"]), "batches": len(acc["masked"]),
        }), flush=True)


if __name__ == "__main__":
    main()
