"""Recipes (loading, overrides, one-line errors) and the optimiser groups / lr schedule."""

import math
from pathlib import Path

import pytest
from torch import nn

from gadms_cli.errors import GadmsError
from gadms_cli.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from gadms_cli.recipe import OptimRecipe, dump_recipe, load_recipe, recipe_from_dict

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))


def test_shipped_recipes_load_and_match_the_paper_settings():
    names = {p.name for p in RECIPES}
    assert {"webperson.yaml", "quickstart.yaml", "finetune-cuhk-pedes.yaml", "finetune-icfg-pedes.yaml", "finetune-rstpreid.yaml"} <= names
    web = load_recipe(Path("recipes/webperson.yaml"))
    assert (web.model.arch, web.model.pretrained, web.model.image_size) == ("ViT-B-16", "openai", (384, 128))
    assert (web.train.batch_size, web.train.epochs, web.optim.lr, web.optim.weight_decay) == (512, 30, 1e-4, 4e-5)
    assert (web.optim.optimizer, web.optim.warmup_epochs) == ("adam", 5.0)
    assert (web.method.noise_alpha, web.method.noise_lambda, web.method.noise_gamma) == (0.2, 20.0, 0.9)
    assert (web.method.informative_alpha, web.method.informative_gamma, web.method.mtp_weight) == (0.3, 0.1, 0.4)
    cuhk = load_recipe(Path("recipes/finetune-cuhk-pedes.yaml"))
    assert (cuhk.method.name, cuhk.method.id_loss, cuhk.optim.lr, cuhk.train.epochs) == ("irra", True, 1e-5, 60)
    assert load_recipe(Path("recipes/finetune-icfg-pedes.yaml")).data.val_split is None


def test_overrides_are_typed_and_nested(tmp_path):
    recipe = load_recipe(
        Path("recipes/quickstart.yaml"),
        ["train.epochs=7", "optim.lr=3e-4", "model.image_size=[96, 32]", "data.val_split=null", "method.score_timing=cached"],
    )
    assert recipe.train.epochs == 7 and recipe.optim.lr == pytest.approx(3e-4)
    assert recipe.model.image_size == (96, 32) and recipe.data.val_split is None
    assert recipe.method.score_timing == "cached"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epoch=3"], "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
        (["trian.epochs=3"], "unknown key 'trian'; did you mean 'train'?"),
        (["train.epochs=three"], "'train.epochs' must be int, got 'three'"),
        (["method.token_score=gradient"], "'method.token_score' must be 'ga' | 'similarity' | 'random'"),
        (["train.batch_size=100", "train.grad_accumulation=3"], "must be a multiple of 'train.grad_accumulation'"),
        (["method.noise_alpha=1.5"], "'method.noise_alpha' must be in [0, 1], got 1.5"),
        (["epochs"], "expected key=value"),
    ],
)
def test_bad_keys_and_values_give_one_line_errors(overrides, message):
    with pytest.raises(GadmsError) as info:
        load_recipe(Path("recipes/quickstart.yaml"), overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(GadmsError, match=r"bad.yaml line \d+: not valid YAML"):
        load_recipe(path)
    with pytest.raises(GadmsError, match="not found; pass a YAML file or a shipped recipe name"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("quickstart", "quickstart.yaml", "recipes/quickstart.yaml"):
        assert load_recipe(name).model.arch == "gadms-small-conv"


def test_dumped_recipe_reloads_identically(tmp_path):
    recipe = load_recipe(Path("recipes/webperson.yaml"), ["train.epochs=3"])
    path = tmp_path / "again.yaml"
    path.write_text(dump_recipe(recipe))
    assert load_recipe(path) == recipe


def test_lr_factor_by_hand():
    # 10 warm-up steps from 0.1, then cosine over 90 steps to 0.
    assert lr_factor(0, 100, 10, 0.1, 0.0) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, 0.1, 0.0) == pytest.approx(0.55)
    assert lr_factor(10, 100, 10, 0.1, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.1, 0.0) == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, 0.1, 0.2) == pytest.approx(0.2 + 0.8 * 0.5)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.clip = nn.Linear(3, 3)
        self.mtp = nn.Linear(3, 3)
        self.classifier = nn.Linear(3, 2, bias=False)


def test_param_groups_follow_irra_rule_order_on_vit_b_16_names():
    """Every parameter of a ViT-B-16 PersonCLIP with IRRA's decoder and a classifier, against a table of
    IRRA's rules written out here (lr 1e-5, wd 4e-5, new modules x5, biases x2 without decay)."""
    from gadms_cli.model.factory import create_person_clip

    model = create_person_clip(arch="ViT-B-16", pretrained=None, with_mtp=True, num_classes=11003)
    optim = OptimRecipe(lr=1e-5, weight_decay=4e-5, new_module_lr_mult=5, bias_lr_mult=2, bias_weight_decay=0)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in param_groups(model, optim) for p in g["params"]}
    table = {  # name pattern -> (lr, weight decay)
        "clip.visual.conv1.weight": (1e-5, 4e-5),
        "clip.positional_embedding": (1e-5, 4e-5),
        "clip.visual.transformer.resblocks.0.attn.in_proj_bias": (2e-5, 0.0),
        "clip.transformer.resblocks.11.attn.in_proj_bias": (2e-5, 0.0),
        "clip.visual.transformer.resblocks.0.ln_1.weight": (1e-5, 4e-5),
        "clip.visual.transformer.resblocks.0.ln_1.bias": (2e-5, 0.0),
        "mtp.cross_attn.in_proj_weight": (5e-5, 4e-5),
        "mtp.cross_attn.in_proj_bias": (2e-5, 0.0),
        "mtp.cross_modal_transformer.resblocks.3.mlp.c_fc.weight": (5e-5, 4e-5),
        "mtp.cross_modal_transformer.resblocks.3.mlp.c_fc.bias": (2e-5, 0.0),
        "mtp.ln_pre_t.weight": (1e-5, 4e-5),
        "mtp.ln_post.bias": (2e-5, 0.0),
        "classifier.weight": (5e-5, 4e-5),
        "classifier.bias": (5e-5, 0.0),
    }
    named = dict(model.named_parameters())
    for name, want in table.items():
        assert lr_of[id(named[name])] == pytest.approx(want), name
    head = [n for n in named if n.startswith("mtp.mlm_head.")]
    assert head and all(lr_of[id(named[n])] == pytest.approx((5e-5, 0.0 if "bias" in n else 4e-5)) for n in head)
    in_proj_biases = [n for n in named if n.endswith("in_proj_bias")]
    assert len(in_proj_biases) == 29  # 12 + 12 CLIP blocks, the cross-attention, 4 decoder blocks
    assert all(lr_of[id(named[n])] == pytest.approx((2e-5, 0.0)) for n in in_proj_biases)
    uniform = OptimRecipe(lr=1e-5, weight_decay=4e-5, groups="uniform", new_module_lr_mult=5, bias_lr_mult=2)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in param_groups(model, uniform)] == [
        (1e-5, 4e-5, sum(p.requires_grad for p in named.values()))
    ]


def test_scheduler_steps_follow_lr_factor():
    model = _Toy()
    optim = OptimRecipe(lr=1e-3, warmup_epochs=1, warmup_start_factor=0.1, new_module_lr_mult=1, bias_lr_mult=1)
    opt = build_optimizer(model, optim)
    sched = build_scheduler(opt, optim, total_steps=20, steps_per_epoch=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [1e-3 * lr_factor(s, 20, 4, 0.1, 0.0) for s in range(20)]
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(1e-4) and seen[4] == pytest.approx(1e-3)
    assert math.isclose(seen[12], 1e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 16)), rel_tol=1e-9)


def test_time_schedule_follows_the_larger_of_step_and_time_share():
    model = _Toy()
    optim = OptimRecipe(lr=1e-3, warmup_epochs=0, min_lr=1e-5, new_module_lr_mult=1, bias_lr_mult=1)
    opt = build_optimizer(model, optim)
    share = {"value": 0.0}
    sched = build_scheduler(opt, optim, total_steps=100, steps_per_epoch=10, time_share=lambda: share["value"])
    seen = []
    for value in (0.0, 0.0, 0.5, 0.5, 0.6, 1.0):  # the share of the time budget used before each step
        share["value"] = value
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    cosine = lambda p: 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * p))  # noqa: E731
    # steps 1 and 2: time lags, the step count leads; then half the time = step 50 of 100, 60% = step 60;
    # all the time used: the cosine's end, min_lr.
    assert seen == pytest.approx([cosine(0.01), cosine(0.02), cosine(0.5), cosine(0.5), cosine(0.6), 1e-5])
