"""SketchPedes ablation of GA-DMS: which part of the method buys what, under caption noise.

Our own test of the paper's ablation (its Table 4:
base 56.75 -> similarity-score noise masking 63.29 -> GA score 63.87 -> + MTP 64.25
R@1). As the paper starts from OpenAI CLIP, every arm starts from the SketchPedes BASE
model (``--base auto``: plain contrastive training on 2000 clean identities of another
seed, made once and cached; ``--base none``: random weights; ``--base DIR``: any model)
and trains on the same SketchPedes set (``--noise`` of the TRAIN captions corrupted like
web captions, 0.3 by default; val/test captions clean), for the same number of optimiser
steps, with the same seeds, from the shipped ``quickstart`` recipe (at lr 1e-4 from the
base); only the ``method`` section changes, and every arm spells out its score settings:

====================  ================================================================
arm                   method
====================  ================================================================
clip                  the alignment loss on the clean caption only (no masking, no MTP)
random                noise masking by random scores + align (a control)
similarity            noise masking by a plain token-image similarity score + align
ga                    noise masking by the paper's GA score (all layers) + align
ga_mtp                + MTP on informative-masked captions: full GA-DMS, ``online``
ga_mtp_cached         full GA-DMS with the paper's ``cached`` score timing
ga_sample_mtp         full GA-DMS, signed GA score min-max normalised per caption
ga_rank_mtp           full GA-DMS, signed GA score as per-caption ranks
ga_sample_mtp_cached  (not run by default) the same, cached
ga_layers2_mtp        (not run by default) the paper's score over the last 2 of 3 layers
mtp_only              (not run by default) MTP without noise masking
ga_centered_mtp       (not run by default) signed GA score, per-caption ``centered``, + MTP
ga_centered_a1(_mtp)  (not run by default) the same at alpha_n 1.0 (without, with MTP)
oracle(_alpha1)       (not run by default) the true wrong words as the score, alpha_n 0.2 (1.0)
====================  ================================================================

"align" is the quickstart recipe's alignment loss (ITC at logit scale 10: from random
weights SDM collapses, docs/recipes.md); ``--set method.alignment=sdm`` changes it for
every arm. The model is selected on the VALIDATION split (the training loop keeps ``best/``) and
evaluated once on the TEST split. Each finished (arm, seed) is stored in a JSON cache in
``--out``; a rerun with the same settings skips it (so an interrupted ablation resumes, and
``--arms`` can be split across processes that share the cache). At the end the script prints
mean +- std (sample standard deviation over seeds) of R@1 and mAP per arm and writes
``ablation-sketchpedes[-ARCH][-noiseN][-stepsS].md`` + ``.json`` (table, per-seed figures, the exact command,
machine, date) atomically into ``--results`` (default ``docs/results/``; with ``--quick``,
the ``--out`` folder).

    python benchmarks/ablation.py                          # 8 arms x 3 seeds, 320 steps each, from the base
    python benchmarks/ablation.py --threads 1 --arms clip random similarity ga ga_mtp_cached &   # two processes
    python benchmarks/ablation.py --threads 1 --arms ga_mtp ga_sample_mtp ga_rank_mtp            # on 2 cores
    python benchmarks/ablation.py --noise 0.5 --arms clip similarity ga_mtp_cached
    python benchmarks/ablation.py --base none              # from random weights
    python benchmarks/ablation.py --quick                  # smoke run: tiny model, tiny data, few steps
    python benchmarks/ablation.py --arch gadms-small       # the model of the tables in docs/results (before
                                                           # the quickstart moved to gadms-small-conv)

Prefer ``--steps`` (the default): every arm then takes exactly the same optimiser steps
and the same learning-rate schedule, and the time each run took is reported beside it.
With ``--minutes`` the arms get the same wall-clock budget instead (the GA-DMS arms, whose
steps cost more, then take fewer steps) and the cosine schedule does not finish.
"""

from __future__ import annotations

import os

# As the gadms CLI does (cli.py): spinning OpenMP waits make torch many times slower on a
# few cores shared with a DataLoader worker. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gadms_cli.data.synth import SynthConfig, generate_sketchpedes  # noqa: E402
from gadms_cli.errors import GadmsError  # noqa: E402
from gadms_cli.fileio import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE_FILE = "ablation-cache.json"
RESULT_STEM = "ablation-sketchpedes"
CACHE_VERSION = 1
NOISE = 0.3
BASE_LR = 1e-4  # stage-2 learning rate from the base model (the paper's pretraining lr from CLIP)


@dataclass(frozen=True)
class Arm:
    """One configuration of the comparison: a label for the table and its recipe overrides."""

    label: str
    overrides: tuple[str, ...]


_GADMS = ("method.name=gadms", "method.noise_masking=true")
# Score settings are spelled out in every arm, so a change of the recipe's defaults never
# changes an arm silently. "paper": the paper's score (ReLU, batch min-max) over ALL layers
# of the 3-layer tower; the calibrated arms keep the paper's masking formulas and feed them
# a calibrated score (ga_score.py, docs/method.md "Calibrations").
_ALL = ("method.score_layers=all",)
_PAPER = (*_ALL, "method.score_relu=true", "method.score_normalize=batch")
_SIGNED_RANK = (*_ALL, "method.score_relu=false", "method.score_normalize=rank")
_SIGNED_SAMPLE = (*_ALL, "method.score_relu=false", "method.score_normalize=sample")
_SIGNED_CENTERED = (*_ALL, "method.score_relu=false", "method.score_normalize=centered")
ARMS: dict[str, Arm] = {
    "clip": Arm("clip: align only", ("method.name=clip",)),
    "random": Arm(
        "random-score noise masking + align (control)",
        (*_GADMS, "method.token_score=random", "method.mtp=false", "method.score_timing=online"),
    ),
    "similarity": Arm(
        "similarity-score noise masking + align",
        (*_GADMS, "method.token_score=similarity", "method.mtp=false", "method.score_timing=online",
         "method.score_normalize=batch"),
    ),
    "ga": Arm("GA score (paper) + align",
              (*_GADMS, *_PAPER, "method.token_score=ga", "method.mtp=false", "method.score_timing=online")),
    "ga_mtp": Arm(
        "GA score (paper) + align + MTP (GA-DMS, online)",
        (*_GADMS, *_PAPER, "method.token_score=ga", "method.mtp=true", "method.score_timing=online"),
    ),
    "ga_mtp_cached": Arm(
        "GA score (paper) + align + MTP (GA-DMS, cached)",
        (*_GADMS, *_PAPER, "method.token_score=ga", "method.mtp=true", "method.score_timing=cached"),
    ),
    "ga_rank_mtp": Arm(
        "GA score, signed + per-caption rank + align + MTP (online)",
        (*_GADMS, *_SIGNED_RANK, "method.token_score=ga", "method.mtp=true", "method.score_timing=online"),
    ),
    "ga_sample_mtp_cached": Arm(
        "GA score, signed + per-caption min-max + align + MTP (cached)",
        (*_GADMS, *_SIGNED_SAMPLE, "method.token_score=ga", "method.mtp=true", "method.score_timing=cached"),
    ),
    "ga_sample_mtp": Arm(
        "GA score, signed + per-caption min-max + align + MTP (online)",
        (*_GADMS, *_SIGNED_SAMPLE, "method.token_score=ga", "method.mtp=true", "method.score_timing=online"),
    ),
    "ga_centered_mtp": Arm(
        "GA score, signed + per-caption centered (0 stays at 0.5) + align + MTP (online)",
        (*_GADMS, *_SIGNED_CENTERED, "method.token_score=ga", "method.mtp=true", "method.score_timing=online"),
    ),
    # The paper's formulas with alpha_n 1.0 (the cap on a token's noise-masking probability; the paper's 0.2
    # caps it at 0.18): with the centered score only words that argue against the image come near it.
    "ga_centered_a1": Arm(
        "GA score, signed + per-caption centered + align, alpha_n 1.0 (no MTP)",
        (*_GADMS, *_SIGNED_CENTERED, "method.token_score=ga", "method.mtp=false", "method.score_timing=online",
         "method.noise_alpha=1.0"),
    ),
    "ga_centered_a1_mtp": Arm(
        "GA score, signed + per-caption centered + align + MTP (online), alpha_n 1.0",
        (*_GADMS, *_SIGNED_CENTERED, "method.token_score=ga", "method.mtp=true", "method.score_timing=online",
         "method.noise_alpha=1.0"),
    ),
    "ga_layers2_mtp": Arm(
        "GA score (paper) over the last 2 of 3 layers + align + MTP (online)",
        (*_GADMS, "method.score_layers=2", "method.score_relu=true", "method.score_normalize=batch",
         "method.token_score=ga", "method.mtp=true", "method.score_timing=online"),
    ),
    # Bounds, not methods: the truth as the score (0 on the words SketchPedes wrote wrong, 1 elsewhere).
    "oracle": Arm(
        "oracle score (the corrupted words) + align, paper's masking (alpha 0.2: p 0.18 per wrong word)",
        (*_GADMS, "method.token_score=oracle", "method.mtp=false", "method.score_timing=online"),
    ),
    "oracle_alpha1": Arm(
        "oracle score + align, alpha 1.0 (p 0.88 per wrong word)",
        (*_GADMS, "method.token_score=oracle", "method.mtp=false", "method.score_timing=online", "method.noise_alpha=1.0"),
    ),
    "mtp_only": Arm(
        "align + MTP on GA-informative-masked captions, no noise masking",
        ("method.name=gadms", "method.noise_masking=false", *_PAPER, "method.token_score=ga", "method.mtp=true",
         "method.score_timing=online"),
    ),
}
DEFAULT_ARMS = ("clip", "random", "similarity", "ga", "ga_mtp", "ga_mtp_cached", "ga_sample_mtp", "ga_rank_mtp")
BASELINE_ARM = "clip"
FIRST_TABLES_ARCH = "gadms-small"  # the architecture of the first tables, whose file names carry no arch


@dataclass(frozen=True)
class Profile:
    """Model, data and batch of a mode (full or ``--quick``)."""

    arch: str | None  # None: the quickstart recipe's (as for the two fields below)
    image_size: tuple[int, int] | None  # (height, width) pixels
    batch_size: int | None
    steps: int | None  # None: the quickstart recipe's train.max_steps
    seeds: tuple[int, ...]
    synth: SynthConfig
    data_folder: str  # under --out, when --data is not given
    num_workers: int
    base_synth: SynthConfig  # the base model's CLEAN corpus: other identities (another seed)
    base_steps: int  # optimiser steps of the base model's plain contrastive training


FULL = Profile(  # the quickstart's model, image size, batch and steps
    arch=None,
    image_size=None,
    batch_size=None,
    steps=None,
    seeds=(0, 1, 2),
    synth=SynthConfig(train_ids=800, val_ids=50, test_ids=100, images_per_id=4, height=192, width=64, noise=NOISE),
    data_folder="sketchpedes-noise0.3",
    num_workers=1,
    base_synth=SynthConfig(train_ids=2000, val_ids=50, test_ids=0, images_per_id=4, height=192, width=64, seed=1, noise=0.0),
    base_steps=1000,
)
QUICK = Profile(
    arch="gadms-tiny",  # width 64, 2 layers
    image_size=(96, 32),
    batch_size=16,
    steps=4,
    seeds=(0,),
    synth=SynthConfig(train_ids=24, val_ids=6, test_ids=8, images_per_id=2, height=96, width=32, noise=NOISE),
    data_folder="sketchpedes-quick",
    num_workers=0,
    base_synth=SynthConfig(train_ids=24, val_ids=6, test_ids=0, images_per_id=2, height=96, width=32, seed=1, noise=0.0),
    base_steps=4,
)


# --- data ------------------------------------------------------------------------------


def split_sizes(args: argparse.Namespace, profile: Profile) -> SynthConfig:
    """The experiment's SketchPedes options: the profile's, with ``--noise``, ``--val-ids`` and ``--test-ids``."""
    return replace(
        profile.synth, noise=args.noise,
        val_ids=args.val_ids if args.val_ids is not None else profile.synth.val_ids,
        test_ids=args.test_ids if args.test_ids is not None else profile.synth.test_ids,
    )


def split_suffix(config: SynthConfig, profile: Profile) -> str:
    """``-valV-testT`` for split sizes other than the profile's (folder and result names), else empty."""
    if (config.val_ids, config.test_ids) == (profile.synth.val_ids, profile.synth.test_ids):
        return ""
    return f"-val{config.val_ids}-test{config.test_ids}"


def prepare_data(args: argparse.Namespace, profile: Profile) -> tuple[Path, dict]:
    """The SketchPedes folder to use and its manifest (``sketchpedes.json``); generated if needed."""
    config = split_sizes(args, profile)
    if args.data is not None:
        root = Path(args.data)
        manifest_path = root / "sketchpedes.json"
        if not manifest_path.is_file():
            raise GadmsError(f"--data {root}: no sketchpedes.json; pass a folder written by 'gadms synth'")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        noise = manifest.get("config", {}).get("noise")
        if noise != args.noise:
            print(f"note: --data {root} has caption noise {noise}, not {args.noise}; the results record it", flush=True)
        return root, manifest
    folder = profile.data_folder if args.noise == NOISE else f"{profile.data_folder.split('-noise')[0]}-noise{args.noise}"
    return generate_once(Path(args.out) / (folder + split_suffix(config, profile)), config)


def generate_once(root: Path, config: SynthConfig) -> tuple[Path, dict]:
    """SketchPedes of ``config`` in ``root``, reused when a generation with the same options is there."""
    wanted = {key: value for key, value in asdict(config).items() if key != "workers"}
    manifest_path = root / "sketchpedes.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if data_options(manifest.get("config")) == data_options(wanted) and (root / "reid_raw.json").is_file():
            print(f"reusing {root}", flush=True)
            return root, manifest
    print(f"generating SketchPedes (noise {config.noise}, seed {config.seed}) -> {root}", flush=True)
    summary = generate_sketchpedes(root, config, overwrite=True)
    print(f"  {summary.images} images in {summary.seconds:.1f} s", flush=True)
    return root, json.loads(manifest_path.read_text(encoding="utf-8"))


# --- the base model --------------------------------------------------------------------


def prepare_base(args: argparse.Namespace, profile: Profile) -> Path | None:
    """The model every arm starts from: ``--base none`` -> None (random weights); ``--base PATH``
    -> that model folder; ``--base auto`` (default) -> the SketchPedes base CLIP, made once in
    ``--out/base`` (recipe ``sketchpedes-base``: plain contrastive training on a CLEAN corpus of
    other identities) and reused while its settings are unchanged."""
    if args.base == "none":
        return None
    if args.base != "auto":
        path = Path(args.base)
        if not (path / "config.json").is_file():
            raise GadmsError(f"--base {path}: not a gadms model folder (no config.json); pass a model folder, auto or none")
        return path
    from accelerate.state import AcceleratorState

    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    root = Path(args.out) / "base"
    data_dir, manifest = generate_once(root / "sketchpedes", profile.base_synth)
    # The full profile trains exactly the shipped recipe (what docs/method.md tells users to run).
    overrides = [f"data.path={data_dir}"]
    if profile.arch is None:  # the recipe's architecture, named so that it is part of the cache key
        overrides.append(f"model.arch={args.arch or load_recipe('sketchpedes-base').model.arch}")
    if profile.arch is not None:
        overrides += [f"model.arch={profile.arch}", f"model.image_size=[{profile.image_size[0]}, {profile.image_size[1]}]",
                      f"train.batch_size={profile.batch_size}", f"data.num_workers={profile.num_workers}",
                      f"train.max_steps={profile.base_steps}", "train.eval_every=2", "train.checkpoint_every=0"]
    key = settings_key(overrides, manifest)
    model_dir, stamp = root / "model", root / "model" / "base-settings.txt"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == key:
        print(f"reusing the base model {model_dir}", flush=True)
        return model_dir
    print(f"training the base model ({profile.base_steps} steps of plain contrastive training) -> {model_dir}", flush=True)
    run_dir = root / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    AcceleratorState._reset_state(True)
    try:
        train(load_recipe("sketchpedes-base", overrides), run_dir=run_dir, cpu=args.cpu)
    finally:
        AcceleratorState._reset_state(True)
    best = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "last"
    tmp = root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    (tmp / "base-settings.txt").write_text(key + "\n", encoding="utf-8")
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return model_dir


# --- settings and the cache ---------------------------------------------------------------


def base_overrides(args: argparse.Namespace, profile: Profile, data_dir: Path, steps: int | None, base: Path | None) -> list[str]:
    """Recipe overrides shared by every arm (the arm's and the seed's come on top)."""
    common = [f"model.pretrained={base if base is not None else 'null'}"]
    if base is not None:
        # From a trained start the quickstart's from-scratch lr 5e-4 undoes the base: measured on
        # seed 0, clip fell from the base's 76.6 test R@1 to 71.0 at 5e-4 and to 74.0 at 1e-4.
        common.append(f"optim.lr={BASE_LR}")
    from gadms_cli.recipe import load_recipe

    # The architecture is always named, so that it is part of every cache key (the quickstart's may change).
    common.append(f"model.arch={profile.arch or args.arch or load_recipe('quickstart').model.arch}")
    if profile.image_size is not None:
        common.append(f"model.image_size=[{profile.image_size[0]}, {profile.image_size[1]}]")
    if profile.batch_size is not None:
        common.append(f"train.batch_size={profile.batch_size}")
    common += [
        # the paper's objectives only: the quickstart's short-query options (docs/method.md) stay off
        "method.phrase_weight=0",
        "method.attribute_weight=0",
        f"data.path={data_dir}",
        "data.val_split=val",
        f"data.num_workers={profile.num_workers}",
        "train.checkpoint_every=0",  # resumability is per (arm, seed) through the cache
    ]
    if steps is not None:
        # enough epochs that max_steps ends the run; the cosine schedule spans exactly `steps`
        common += [f"train.max_steps={steps}", "train.max_minutes=null", "train.epochs=100000",
                   f"train.eval_every={max(1, steps // args.evals)}"]
    else:
        common += ["train.max_steps=null", f"train.max_minutes={args.minutes}", "train.eval_every=0"]
    return common + list(args.set)


# SketchPedes options at these values write byte for byte the data of before they existed
# (tests/test_synth_captions.py), so they are left out of cache keys: earlier results stay valid.
LEGACY_DATA_OPTIONS = {"caption_mix": "full=1", "twin_fraction": 0.0, "test_include": "", "test_include_count": 3}


def data_options(config: dict | None) -> dict | None:
    """``config`` without the options that are at their :data:`LEGACY_DATA_OPTIONS` values."""
    if config is None:
        return None
    return {key: value for key, value in config.items() if LEGACY_DATA_OPTIONS.get(key, object()) != value}


def settings_key(overrides: list[str], manifest: dict) -> str:
    """A short hash of recipe overrides and data options: a cached result is reused only when they match."""
    blob = json.dumps({"overrides": overrides, "data": data_options(manifest.get("config")), "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict:
    if not path.is_file():
        return {"version": CACHE_VERSION, "entries": {}}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != CACHE_VERSION:
        return {"version": CACHE_VERSION, "entries": {}}
    return data


def write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")


# --- one run -------------------------------------------------------------------------------


def run_one(arm: str, seed: int, common: list[str], runs_dir: Path, data_dir: Path, cpu: bool) -> dict:
    """Train one (arm, seed), evaluate the val-selected model on TEST; return the record."""
    from accelerate.state import AcceleratorState

    from gadms_cli.evaluate import evaluate_benchmark
    from gadms_cli.model.checkpoint import load_checkpoint
    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    # one folder per data set: runs of the same arm on other data (another noise level) are kept
    run_dir = runs_dir / data_dir.name / f"{arm}-seed{seed}"
    if run_dir.exists():  # an unfinished earlier attempt (finished ones are in the cache)
        shutil.rmtree(run_dir)
    recipe = load_recipe(
        "quickstart", [*common, *ARMS[arm].overrides, f"train.seed={seed}", f"train.run_name={arm}-seed{seed}"]
    )
    started = time.monotonic()
    AcceleratorState._reset_state(True)
    try:
        result = train(recipe, run_dir=run_dir, cpu=cpu)
    finally:
        AcceleratorState._reset_state(True)
    wall = time.monotonic() - started
    selected = run_dir / "best" if (run_dir / "best").is_dir() else run_dir / "last"
    device = eval_device(cpu)
    model = load_checkpoint(selected, device=device).eval()
    test = evaluate_benchmark(model, data_dir, "test", name="sketchpedes")
    last = last_model_test(run_dir, data_dir, device)
    # The full-state checkpoints (model + optimiser) only serve `--resume`; this script
    # resumes per finished run through its cache, so they are dropped to save disk.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    state = result.state
    return {
        "arm": arm,
        "seed": seed,
        "test": {key: test[key] for key in TEST_KEYS},
        "test_last": last,
        "val_best_R1": state.best_metric,
        "val_best_step": state.best_step,
        "selected": selected.name,
        "steps": state.step,
        "stopped_because": result.stopped_because,
        "train_seconds": round(state.train_seconds, 2),
        "seconds_per_step": round(state.train_seconds / max(state.step, 1), 4),
        "wall_seconds": round(wall, 2),
        "run_dir": str(run_dir),
    }


TEST_KEYS = ("R1", "R5", "R10", "mAP", "mINP", "queries", "gallery")


def eval_device(cpu: bool) -> str:
    """Where trained models are evaluated: the GPU when there is one, unless --cpu."""
    return "cpu" if cpu or not torch.cuda.is_available() else "cuda"


def last_model_test(run_dir: Path, data_dir: Path, device: str) -> dict | None:
    """TEST metrics of the run's final model (``last/``, the same step count for every arm): a figure
    that no validation noise can move, beside the val-selected one. None when ``last/`` is missing
    or was trained on other data than ``data_dir``."""
    from gadms_cli.evaluate import evaluate_benchmark
    from gadms_cli.model.checkpoint import load_checkpoint
    import yaml

    last, recipe_file = run_dir / "last", run_dir / "recipe.yaml"
    if not (last / "config.json").is_file() or not recipe_file.is_file():
        return None
    trained_on = Path(yaml.safe_load(recipe_file.read_text())["data"]["path"])
    if trained_on.resolve() != data_dir.resolve():
        return None
    test = evaluate_benchmark(load_checkpoint(last, device=device).eval(), data_dir, "test", name="sketchpedes")
    return {key: test[key] for key in TEST_KEYS}


# --- summary and result files -----------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def summarise(records: list[dict], arms: list[str]) -> list[dict]:
    """Per arm: n, mean/std of test R@1 and mAP, mean seconds per run and per step."""
    rows = []
    baseline_runs = [r for r in records if r["arm"] == BASELINE_ARM]
    baseline = [r["test"]["R1"] for r in baseline_runs]
    baseline_last = [r["test_last"]["R1"] for r in baseline_runs if r.get("test_last")]
    baseline_last = baseline_last if len(baseline_last) == len(baseline_runs) else []
    for arm in arms:
        mine = [r for r in records if r["arm"] == arm]
        r1 = [r["test"]["R1"] for r in mine]
        ap = [r["test"]["mAP"] for r in mine]
        last = [r["test_last"]["R1"] for r in mine if r.get("test_last")]
        r1_mean, r1_std = mean_std(r1)
        ap_mean, ap_std = mean_std(ap)
        rows.append({
            "arm": arm,
            "label": ARMS[arm].label,
            "seeds": [r["seed"] for r in mine],
            "R1_mean": round(r1_mean, 3),
            "R1_std": None if r1_std is None else round(r1_std, 3),
            "mAP_mean": round(ap_mean, 3),
            "mAP_std": None if ap_std is None else round(ap_std, 3),
            "R1_minus_clip": round(r1_mean - statistics.fmean(baseline), 3) if baseline and arm != BASELINE_ARM else None,
            "R1_last_mean": round(statistics.fmean(last), 3) if len(last) == len(mine) else None,
            "R1_last_minus_clip": (round(statistics.fmean(last) - statistics.fmean(baseline_last), 3)
                                   if len(last) == len(mine) and baseline_last and arm != BASELINE_ARM else None),
            "steps_mean": statistics.fmean(r["steps"] for r in mine),
            "train_seconds_mean": round(statistics.fmean(r["train_seconds"] for r in mine), 1),
            "seconds_per_step_mean": round(statistics.fmean(r["seconds_per_step"] for r in mine), 4),
            "_r1": r1,
            "_ap": ap,
            "_last": last if len(last) == len(mine) else None,
        })
    return rows


def table_lines(rows: list[dict]) -> list[str]:
    """The summary as a markdown table."""
    lines = [
        "| arm | method | seeds | test R@1 | test mAP | R@1 vs clip | test R@1, last model | last vs clip | steps | s / run | s / step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        delta = "" if row["R1_minus_clip"] is None else f"{row['R1_minus_clip']:+.2f}"
        last = "-" if row.get("_last") is None else pm(row["_last"])
        last_delta = "" if row.get("R1_last_minus_clip") is None else f"{row['R1_last_minus_clip']:+.2f}"
        lines.append(
            f"| {row['arm']} | {row['label']} | {len(row['seeds'])} | {pm(row['_r1'])} | {pm(row['_ap'])} | {delta} "
            f"| {last} | {last_delta} | {row['steps_mean']:.0f} | {row['train_seconds_mean']:.0f} | {row['seconds_per_step_mean']:.3f} |"
        )
    return lines


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def write_results(results_dir: Path, command: str, settings: dict, rows: list[dict], records: list[dict], quick: bool,
                  splits: str = "") -> Path:
    """``ablation-sketchpedes[-ARCH][-noiseN][-valV-testT][-stepsS](-quick).md`` and ``.json`` in ``results_dir``,
    each written atomically (``-ARCH`` when the architecture is not ``gadms-small``, the first tables' ; ``splits``
    (``-valV-testT``) when the split sizes are not the profile's; ``-stepsS`` when the steps differ from the
    quickstart recipe's)."""
    noise = settings["data"]["noise"] if settings.get("data") else NOISE
    steps = "" if settings.get("default_steps", True) else f"-steps{settings['steps']}"
    arch = "" if quick or settings.get("arch", FIRST_TABLES_ARCH) == FIRST_TABLES_ARCH else f"-{settings['arch']}"
    stem = RESULT_STEM + arch + ("" if noise == NOISE else f"-noise{noise}") + splits + steps + ("-quick" if quick else "")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    public_rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    write_json(results_dir / f"{stem}.json", {
        "command": command, "date": date, "machine": info, "settings": settings,
        "summary": public_rows, "runs": records,
    })
    budget = f"{settings['steps']} optimiser steps" if settings["steps"] is not None else f"{settings['minutes']} minutes"
    lines = [
        f"# SketchPedes ablation of GA-DMS{' (quick smoke run: not a result)' if quick else ''}",
        "",
        f"Made by `{command}` on {date}.",
        "",
        f"Machine: {info['platform']}, {info['cpu_count']} CPUs ({info['torch_threads']} torch threads), "
        f"GPU: {info['gpu'] or 'none'}, torch {info['torch']}, Python {info['python']}.",
        "",
        f"Data: SketchPedes `{settings['data_dir']}`, {settings['data']['train_ids']} train / "
        f"{settings['data']['val_ids']} val / {settings['data']['test_ids']} test identities x "
        f"{settings['data']['images_per_id']} images, {settings['data']['height']}x{settings['data']['width']}, "
        f"caption noise {settings['data']['noise']} on the train captions (val and test clean), data seed {settings['data']['seed']}.",
        "",
        f"Training: recipe `quickstart` with {settings['arch']} from {settings['start']}, batch {settings['batch_size']} "
        f"({settings['samples_per_id']} per identity), lr {settings['lr']}, alignment loss {settings['alignment'].upper()} "
        f"at logit scale {settings['logit_scale']}, "
        f"{budget} per run, seeds {', '.join(map(str, settings['seeds']))}; the model is selected on the val split "
        "(best val R@1) and evaluated once on the test split; 'last model' is the final model of every run "
        "(the same step count for every arm, no selection). Mean ± sample standard deviation over seeds; "
        "'s / run' is the training loop's time (periodic validation included), 's / step' that time per optimiser step.",
        "",
        f"Shared recipe overrides: `{' '.join(settings['overrides'])}`",
        "",
        *table_lines(rows),
        "",
        "Per run (test split):",
        "",
        "| arm | seed | R@1 | R@5 | R@10 | mAP | best val R@1 (step) | last model R@1 | mAP | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        t, last = r["test"], r.get("test_last")
        val = "-" if r["val_best_R1"] is None else f"{r['val_best_R1']:.2f} ({r['val_best_step']})"
        last_cells = "- | -" if not last else f"{last['R1']:.2f} | {last['mAP']:.2f}"
        lines.append(
            f"| {r['arm']} | {r['seed']} | {t['R1']:.2f} | {t['R5']:.2f} | {t['R10']:.2f} | {t['mAP']:.2f} "
            f"| {val} | {last_cells} | {r['steps']} | {r['train_seconds']:.0f} |"
        )
    with atomic_write(results_dir / f"{stem}.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return results_dir / f"{stem}.md"


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=None, help=f"arms to run (default: {' '.join(DEFAULT_ARMS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default 0 1 2; --quick: 0)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: the quickstart recipe's max_steps; --quick: 4)")
    budget.add_argument("--minutes", type=float, default=None, help="training minutes per run instead of a step count")
    parser.add_argument("--evals", type=int, default=6, help="validations per run with --steps (model selection on val)")
    parser.add_argument("--data", type=Path, default=None, help="an existing SketchPedes folder (default: generate one under --out)")
    parser.add_argument("--noise", type=float, default=NOISE, help=f"fraction of corrupted train captions (default {NOISE})")
    parser.add_argument("--val-ids", type=int, default=None, help="validation identities (default 50; --quick: 6)")
    parser.add_argument("--test-ids", type=int, default=None, help="test identities (default 100; --quick: 8; CUHK-PEDES tests on 1000)")
    parser.add_argument("--base", default="auto", help="start model: auto (make the SketchPedes base CLIP once), none (random weights) or a model folder")
    parser.add_argument("--out", type=Path, default=None, help="work folder: data, runs, cache (default runs/ablation-sketchpedes[-quick])")
    parser.add_argument("--results", type=Path, default=None, help="where the .md/.json go (default docs/results; --quick: --out)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override for every arm (repeatable)")
    parser.add_argument("--arch", default=None, help="architecture of the base model and every arm (default: the recipes'; the tables in docs/results used gadms-small)")
    parser.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (two processes of 1 thread each share 2 cores best)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model and data, a few steps, one seed")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be > 0")
    if args.evals < 1:
        parser.error("--evals must be >= 1")
    for flag, value in (("--val-ids", args.val_ids), ("--test-ids", args.test_ids)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the ablation; returns what the result files hold: ``{"settings": ..., "runs": [one record per run]}``."""
    from gadms_cli import progress

    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    profile = QUICK if args.quick else FULL
    arms = list(args.arms or DEFAULT_ARMS)
    seeds = list(args.seeds if args.seeds is not None else profile.seeds)
    from gadms_cli.recipe import load_recipe

    quickstart = load_recipe("quickstart")
    steps = None if args.minutes is not None else (args.steps or profile.steps or quickstart.train.max_steps)
    args.out = args.out or Path("runs") / ("ablation-sketchpedes" + ("-quick" if args.quick else ""))
    results_dir = args.results or (args.out if args.quick else REPO / "docs" / "results")
    command = "python benchmarks/ablation.py" + ("" if not sys.argv[1:] else " " + shlex.join(sys.argv[1:]))
    progress.enable(sys.stderr.isatty())  # bars in a terminal; plain lines in a log

    try:
        data_dir, manifest = prepare_data(args, profile)
        base = prepare_base(args, profile)
        common = base_overrides(args, profile, data_dir, steps, base)
        key = settings_key(common, manifest)  # the shared settings, recorded in the result files
        cache_path = args.out / CACHE_FILE
        cache = read_cache(cache_path)
        records = []
        total = len(arms) * len(seeds)
        # seed by seed, so an interrupted ablation already has every arm at the first seeds
        for index, (arm, seed) in enumerate(((a, s) for s in seeds for a in arms), start=1):
            entry = f"{settings_key([*common, *ARMS[arm].overrides], manifest)}:{arm}:{seed}"
            record = cache["entries"].get(entry)
            if record is not None and "test_last" not in record:  # cached before the last model was measured
                last = last_model_test(Path(record["run_dir"]), data_dir, eval_device(args.cpu))
                if last is None:  # its run folder is gone or holds a later run on other data: train again
                    record = None
                else:
                    record["test_last"] = last
                    cache = read_cache(cache_path)
                    cache["entries"][entry] = record
                    write_json(cache_path, cache)
            if record is None:
                print(f"[{index}/{total}] {arm} seed {seed}: training ({ARMS[arm].label})", flush=True)
                record = run_one(arm, seed, common, args.out / "runs", data_dir, args.cpu)
                # Re-read before writing: two processes may share one cache (--arms split across them).
                cache = read_cache(cache_path)
                cache["entries"][entry] = record
                write_json(cache_path, cache)
                status = "done"
            else:
                status = "cached"
            t = record["test"]
            print(
                f"[{index}/{total}] {arm} seed {seed} ({status}): {record['steps']} steps in {record['train_seconds']:.0f} s "
                f"({record['seconds_per_step']:.3f} s/step); test R@1 {t['R1']:.2f} mAP {t['mAP']:.2f} "
                f"(model from step {record['val_best_step']}, val R@1 {record['val_best_R1'] or 0:.2f})"
                + (f"; last model test R@1 {record['test_last']['R1']:.2f}" if record.get("test_last") else ""),
                flush=True,
            )
            records.append(record)
    except GadmsError as error:
        sys.exit(f"error: {error}")

    resolved = load_recipe("quickstart", common)
    rows = summarise(records, arms)
    print()
    print("\n".join(table_lines(rows)))
    settings = {
        "arms": arms, "seeds": seeds, "steps": steps, "minutes": args.minutes, "quick": args.quick,
        "default_steps": args.quick or args.minutes is not None or steps == quickstart.train.max_steps,
        "arch": resolved.model.arch, "image_size": list(resolved.model.image_size), "batch_size": resolved.train.batch_size,
        "samples_per_id": resolved.data.samples_per_id, "lr": resolved.optim.lr,
        "alignment": resolved.method.alignment, "logit_scale": resolved.method.logit_scale,
        "data_dir": str(data_dir), "data": manifest.get("config"), "overrides": common, "settings_key": key,
        "start": "random weights" if base is None else f"the base model `{base}` (`--base {args.base}`)",
    }
    splits = "" if args.data is not None else split_suffix(split_sizes(args, profile), profile)
    written = write_results(results_dir, command, settings, rows, records, args.quick, splits)
    print(f"\nresults: {written} and {written.with_suffix('.json')}")
    return {"settings": settings, "runs": records}


if __name__ == "__main__":
    main()
