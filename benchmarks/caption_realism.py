"""Caption realism on SketchPedes: which data and training options make short queries work.

Each variant makes its own SketchPedes (base corpus and experiment data, as ``gadms
quickstart`` does, with the variant's ``gadms synth`` options) and trains the quickstart's
two stages on it (base CLIP ``BASE_STEPS`` = 330 steps, then GA-DMS ``STAGE2_STEPS`` = 160 steps at
lr ``STAGE2_LR``, the quickstart's until 2026-12-02, unless the variant sets ``base:train.max_steps``
or ``stage2:train.max_steps``; with the variant's recipe overrides). Every model is then measured on the SAME
held-out sets, made once with another seed (5 and 7), all with full captions:

- test R@1 on a test split without colour twins (SketchPedes' default people) and on one with
  30 % twins;
- precision@10 of ``benchmarks/retrieve_precision.py``'s single- and two-attribute queries on a
  fresh 200-identity gallery (seed 7, with women in red coats for the demo query);
- linear-probe balanced accuracy of ``benchmarks/attribute_probe.py`` (train images of the
  variant's data, test images of the twin test split).

Usage::

    python benchmarks/caption_realism.py [--out runs/caption-realism] [--variants old new dropout lookalike] [--json FILE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: see cli.py

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
# The steps every variant trains unless it says otherwise (the quickstart's before the short-query
# options; fixed here so that cached variants stay comparable when the quickstart's change).
BASE_STEPS, STAGE2_STEPS = 330, 160

REALISTIC = {"caption_mix": "full=0.5,partial=0.3,short=0.2", "twin_fraction": 0.3}
MILD = "full=0.8,partial=0.1,short=0.1"
# Every variant names its architecture, so a change of the recipes' default never changes one silently.
VIT, CONV = "model.arch=gadms-small", "model.arch=gadms-small-conv"

# name -> (synth options, stage-1 and stage-2 recipe overrides, description)
VARIANTS: dict[str, tuple[dict, list[str], str]] = {
    "old": ({}, [VIT], "synth defaults: full captions only, no colour twins"),
    "new": (REALISTIC, [VIT], "50/30/20 full/partial/short captions, 30% colour twins"),
    "styles": ({"caption_mix": REALISTIC["caption_mix"]}, [VIT], "caption styles only: 50/30/20 full/partial/short, no colour twins"),
    "twins": ({"twin_fraction": 0.3}, [VIT], "colour twins only: 30% twins, full captions"),
    "mild": ({"caption_mix": MILD, "twin_fraction": 0.3}, [VIT], "80/10/10 full/partial/short captions, 30% colour twins"),
    "dropout": (REALISTIC, [VIT, "data.augment.caption_dropout=0.2"], "50/30/20 captions, 30% twins + caption dropout 0.2 (both stages)"),
    "lookalike": (REALISTIC, [VIT, "data.lookalike_group=4"], "50/30/20 captions, 30% twins + look-alike batches of 4 (both stages)"),
    "conv": ({}, [CONV], "synth defaults, image tower with a convolutional stem (gadms-small-conv)"),
    "conv_twins": ({"twin_fraction": 0.3}, [CONV], "30% colour twins, full captions, gadms-small-conv"),
    "conv_new": (REALISTIC, [CONV], "50/30/20 captions, 30% twins, gadms-small-conv"),
    # Hard negatives: half the people have a colour twin, and look-alike batches of 2 put each
    # twin beside its original, so only gender, hair, hat or bag tell the pair apart.
    "conv_look": ({"twin_fraction": 0.5}, [CONV, "data.lookalike_group=2"], "50% colour twins + look-alike batches of 2 (both stages), full captions, gadms-small-conv"),
    "conv_look_drop": ({"twin_fraction": 0.5}, [CONV, "data.lookalike_group=2", "data.augment.caption_dropout=0.3"], "50% twins + look-alike batches of 2 + caption dropout 0.3 (both stages), full captions, gadms-small-conv"),
    # Phrase alignment (method.phrase_weight): short attribute queries written from each caption,
    # matched to every image of the batch they are true of (docs/method.md).
    "conv_phrase": ({}, [CONV, "method.phrase_weight=1.0"], "synth defaults + phrase alignment weight 1 (both stages), gadms-small-conv"),
    "conv_phrase_s30": ({}, [CONV, "method.phrase_weight=1.0", "method.phrase_logit_scale=30.0"], "synth defaults + phrase alignment weight 1 at scale 30 (both stages), gadms-small-conv"),
    "conv_phrase_w3": ({}, [CONV, "method.phrase_weight=3.0"], "synth defaults + phrase alignment weight 3 (both stages), gadms-small-conv"),
    # + an attribute head on the image embedding (method.attribute_weight): the gender, hair length
    # and item types the caption states, so the image tower learns them before the queries can use them.
    "conv_attr": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=1.0"], "synth defaults + phrase alignment 1 + attribute head 1 (both stages), gadms-small-conv"),
    "conv_attr3": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=3.0"], "synth defaults + phrase alignment 1 + attribute head 3 (both stages), gadms-small-conv"),
    "conv_attr8": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0"], "synth defaults + phrase alignment 1 + attribute head 8 (both stages), gadms-small-conv"),
    "conv_attr16": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=16.0"], "synth defaults + phrase alignment 1 + attribute head 16 (both stages), gadms-small-conv"),
    "conv_attr8_long": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "base:train.max_steps=660"], "synth defaults + phrase alignment 1 + attribute head 8 (both stages), base 660 steps, gadms-small-conv"),
    "conv_attr16_long": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=16.0", "base:train.max_steps=660"], "synth defaults + phrase alignment 1 + attribute head 16 (both stages), base 660 steps, gadms-small-conv"),
    "conv_attr8_990": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "base:train.max_steps=990"], "synth defaults + phrase alignment 1 + attribute head 8 (both stages), base 990 steps, gadms-small-conv"),
    "conv_attr8_800": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "base:train.max_steps=800", "stage2:train.max_steps=100"], "synth defaults + phrase alignment 1 + attribute head 8 (both stages), base 800 steps, stage 2 100 steps, gadms-small-conv"),
    # The shipped quickstart (base 800 + stage 2 100 steps) with one change each: a class-balanced
    # attribute loss (method.attribute_balance), a higher base learning rate, fewer GA-DMS steps for more base steps.
    "conv_attr8_800_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "method.attribute_balance=true", "base:train.max_steps=800", "stage2:train.max_steps=100"], "as conv_attr8_800 + class-balanced attribute loss"),
    "conv_attr16_800_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=16.0", "method.attribute_balance=true", "base:train.max_steps=800", "stage2:train.max_steps=100"], "as conv_attr8_800 but attribute head 16, class-balanced"),
    "conv_attr24_800_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=24.0", "method.attribute_balance=true", "base:train.max_steps=800", "stage2:train.max_steps=100"], "as conv_attr8_800 but attribute head 24, class-balanced"),
    "conv_attr32_800_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=32.0", "method.attribute_balance=true", "base:train.max_steps=800", "stage2:train.max_steps=100"], "as conv_attr8_800 but attribute head 32, class-balanced"),
    "conv_attr24_900_60_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=24.0", "method.attribute_balance=true", "base:train.max_steps=900", "stage2:train.max_steps=60"], "attribute head 24, class-balanced, base 900 steps, stage 2 60 steps"),
    "conv_attr32_900_60_bal": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=32.0", "method.attribute_balance=true", "base:train.max_steps=900", "stage2:train.max_steps=60"], "attribute head 32, class-balanced, base 900 steps, stage 2 60 steps"),
    "conv_attr8_800_lr1e3": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "base:optim.lr=1e-3", "base:train.max_steps=800", "stage2:train.max_steps=100"], "as conv_attr8_800 + base lr 1e-3"),
    "conv_attr8_900_60": ({}, [CONV, "method.phrase_weight=1.0", "method.attribute_weight=8.0", "base:train.max_steps=900", "stage2:train.max_steps=60"], "as conv_attr8_800 but base 900 steps, stage 2 60 steps"),
    "conv_long": ({}, [CONV, "base:train.max_steps=660"], "synth defaults, base 660 steps (no short-query options), gadms-small-conv"),
    "conv_phrase_look": ({"twin_fraction": 0.5}, [CONV, "data.lookalike_group=2", "method.phrase_weight=1.0"], "50% twins + look-alike batches of 2 + phrase alignment weight 1 (both stages), gadms-small-conv"),
    "conv_look_mild": ({"caption_mix": MILD, "twin_fraction": 0.5}, [CONV, "data.lookalike_group=2"], "80/10/10 captions, 50% twins + look-alike batches of 2, gadms-small-conv"),
}


def _script(name: str):
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_variant(name: str, out: Path, eval_sets: dict[str, Path], gallery: Path) -> dict:
    from accelerate.state import AcceleratorState

    from gadms_cli.commands.quickstart import BASE_SEED, QUERY_ATTRIBUTES, STAGE2_LR, TEST_IDS
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    synth, both, _ = VARIANTS[name]
    # "base:KEY=VALUE" applies to stage 1 only (e.g. a longer base), "stage2:KEY=VALUE" to stage 2 only,
    # anything else to both stages
    base_only = [item.removeprefix("base:") for item in both if item.startswith("base:")]
    stage2_only = [item.removeprefix("stage2:") for item in both if item.startswith("stage2:")]
    # the short-query options are off unless the variant sets them (the quickstart recipe turns them on)
    overrides = ["method.phrase_weight=0", "method.attribute_weight=0", *(item for item in both if not item.startswith(("base:", "stage2:")))]
    root = out / name
    size = dict(height=192, width=64)
    base_data, data = root / "base-sketchpedes", root / "sketchpedes"
    if not (base_data / "reid_raw.json").is_file():
        generate_sketchpedes(base_data, SynthConfig(train_ids=2000, val_ids=50, test_ids=0, seed=BASE_SEED, **size, **synth), overwrite=True)
    if not (data / "reid_raw.json").is_file():
        generate_sketchpedes(data, SynthConfig(train_ids=800, val_ids=50, test_ids=TEST_IDS, noise=0.3, test_include=QUERY_ATTRIBUTES, **size, **synth), overwrite=True)
    runs = root / "runs"
    stage2_runs = sorted(runs.glob("quickstart-*/best")) + sorted(runs.glob("quickstart-*/last"))
    if stage2_runs and (root / "train_minutes.txt").is_file():  # trained before an interruption: measure it again
        return measure(name, root, stage2_runs[0], float((root / "train_minutes.txt").read_text()), data, eval_sets, gallery)
    started = time.perf_counter()
    shutil.rmtree(runs, ignore_errors=True)
    base = train(load_recipe("sketchpedes-base", [f"data.path={base_data}", f"train.output_dir={runs}", f"train.max_steps={BASE_STEPS}",
                                                   "train.eval_every=0", "train.checkpoint_every=0", *overrides, *base_only]))
    AcceleratorState._reset_state(True)
    base_model = base.run_dir / ("best" if (base.run_dir / "best").is_dir() else "last")
    stage2 = train(load_recipe("quickstart", [f"data.path={data}", f"train.output_dir={runs}", f"model.pretrained={base_model}",
                                               f"optim.lr={STAGE2_LR}", f"train.max_steps={STAGE2_STEPS}", "train.max_minutes=null", *overrides, *stage2_only]))
    AcceleratorState._reset_state(True)
    model_dir = stage2.run_dir / ("best" if (stage2.run_dir / "best").is_dir() else "last")
    train_minutes = (time.perf_counter() - started) / 60
    (root / "train_minutes.txt").write_text(f"{train_minutes:.3f}")
    return measure(name, root, model_dir, train_minutes, data, eval_sets, gallery)


def measure(name: str, root: Path, model_dir: Path, train_minutes: float, data: Path, eval_sets: dict[str, Path], gallery: Path) -> dict:
    """R@1 on the variant's own and the shared test splits, precision@10 on the gallery, probes."""
    from gadms_cli.evaluate import evaluate_benchmark
    from gadms_cli.model.checkpoint import load_checkpoint

    model = load_checkpoint(model_dir).eval()
    result = {"variant": name, "description": VARIANTS[name][2], "model": str(model_dir), "train_minutes": round(train_minutes, 2)}
    result["own_test_R1"] = evaluate_benchmark(model, data, "test", name="sketchpedes")["R1"]
    for key, folder in eval_sets.items():
        result[f"{key}_R1"] = evaluate_benchmark(model, folder, "test", name="sketchpedes")["R1"]

    precision = _script("retrieve_precision")
    from gadms_cli.retrieve import Retriever

    lines = (gallery / "attributes.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["split"] == "test"]
    queries = precision.choose_queries(records, 2, 10)
    retriever = Retriever(model_dir)
    retriever.index(gallery / "imgs" / "test", index_dir=root / "gallery-index")
    attributes_of = {r["file_path"].split("/", 1)[1]: r["attributes"] for r in records}
    rows = []
    for query, hits in zip(queries, retriever.search_texts([q.text for q in queries], top_k=10)):
        relevant = sum(query.matches(a) for a in attributes_of.values())
        p10 = sum(query.matches(attributes_of[h.relative_path]) for h in hits.hits) / 10
        rows.append({"query": query.text, "attributes": precision.ATTRIBUTES[query.family], "relevant": relevant, "p10": p10, "ceiling": min(1.0, relevant / 10)})
    result["precision_at_10"] = rows
    result["mean_precision_at_10"] = round(sum(r["p10"] for r in rows if r["relevant"]) / max(1, sum(1 for r in rows if r["relevant"])), 3)

    probe = _script("attribute_probe")
    result["probe_balanced_accuracy"] = probe.probe_folder(model_dir, data, eval_sets["twins"])
    return result


def write_markdown(path: Path, results: dict[str, dict], out: Path) -> None:
    """The summary table, the per-query precision and the probes, as Markdown (written atomically)."""
    import platform

    probes = ("woman", "long hair", "any bag", "backpack", "hat", "dress", "red top (control)")
    lines = [f"# Caption realism on SketchPedes ({time.strftime('%Y-%m-%d', time.gmtime())})", "",
             f"Command: `python benchmarks/caption_realism.py --out {out} --variants {' '.join(results)} --md {path}`", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, no GPU. Each variant: its own SketchPedes (base corpus "
             "2000 clean identities seed 1, experiment 800/50/100 identities seed 0 with 30% noisy train captions), the "
             "quickstart's two stages (330 base steps, then 160 GA-DMS steps at lr 1e-4, unless the variant says otherwise), then the same held-out "
             "sets for every variant (full captions): test splits of 100 identities with and without colour twins "
             "(seed 5), a 200-identity gallery (seed 7) for precision@10, probes fit on the variant's train images and "
             "scored on the twin test split.", "",
             "| variant | data / training | test R@1, no twins | test R@1, twins | own test R@1 | mean P@10 | train min | "
             + " | ".join(f"probe {p}" for p in probes) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(probes)]
    for name, r in results.items():
        cells = [name, r["description"], f"{r['no_twins_R1']:.1f}", f"{r['twins_R1']:.1f}", f"{r['own_test_R1']:.1f}",
                 f"{r['mean_precision_at_10']:.3f}", f"{r['train_minutes']:.1f}",
                 *(f"{r['probe_balanced_accuracy'][p]:.2f}" for p in probes)]
        lines.append("| " + " | ".join(cells) + " |")
    queries = [row["query"] for row in next(iter(results.values()))["precision_at_10"]]
    lines += ["", "Precision@10 per query (ceiling 1 for every query: each has at least 10 matching gallery images):", "",
              "| query | attributes | matches | " + " | ".join(results) + " |", "|---|---|---|" + "---|" * len(results)]
    for i, query in enumerate(queries):
        first = next(iter(results.values()))["precision_at_10"][i]
        lines.append(f"| {query} | {first['attributes']} | {first['relevant']} | "
                     + " | ".join(f"{r['precision_at_10'][i]['p10']:.1f}" for r in results.values()) + " |")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/caption-realism"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None, help="also write the tables as Markdown here")
    args = parser.parse_args()

    from gadms_cli.commands.quickstart import QUERY_ATTRIBUTES
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

    size = dict(height=192, width=64)
    eval_sets = {"no_twins": args.out / "eval-no-twins", "twins": args.out / "eval-twins"}
    for key, folder in eval_sets.items():
        if not (folder / "reid_raw.json").is_file():
            generate_sketchpedes(folder, SynthConfig(train_ids=0, val_ids=0, test_ids=100, seed=5, twin_fraction=0.0 if key == "no_twins" else 0.3, **size), overwrite=True)
    gallery = args.out / "gallery"
    if not (gallery / "reid_raw.json").is_file():
        generate_sketchpedes(gallery, SynthConfig(train_ids=0, val_ids=0, test_ids=200, seed=7, test_include=QUERY_ATTRIBUTES, **size), overwrite=True)

    cache = args.out / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    for name in args.variants:
        if name not in results:
            results[name] = run_variant(name, args.out, eval_sets, gallery)
            cache.write_text(json.dumps(results, indent=1))
        r = results[name]
        r["description"] = VARIANTS[name][2]
        probes = ", ".join(f"{k} {v:.2f}" for k, v in r["probe_balanced_accuracy"].items())
        print(f"{name:10s} R@1 own {r['own_test_R1']:.1f}  no-twins {r['no_twins_R1']:.1f}  twins {r['twins_R1']:.1f}  "
              f"P@10 {r['mean_precision_at_10']:.3f}  train {r['train_minutes']:.1f} min  probes: {probes}")
    if args.md:
        write_markdown(args.md, {name: results[name] for name in args.variants}, args.out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"variants": results, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
