"""Recipe inheritance (`base:`): merging by hand, the shipped fine-tuning recipes, cycles and missing bases."""

from __future__ import annotations

import pytest

from gadms_cli.errors import GadmsError
from gadms_cli.recipe import load_recipe, merge_recipe_data


def test_merge_replaces_values_and_merges_sections():
    base = {"data": {"path": "a", "augment": {"flip": True, "pad_crop": 10}}, "train": {"epochs": 60}}
    child = {"data": {"path": "b", "augment": {"pad_crop": 4}}, "method": {"name": "clip"}}
    assert merge_recipe_data(base, child) == {
        "data": {"path": "b", "augment": {"flip": True, "pad_crop": 4}},
        "train": {"epochs": 60},
        "method": {"name": "clip"},
    }
    assert base["data"]["path"] == "a"  # the base is not changed


def test_shipped_finetune_recipes_differ_only_in_data_and_run_name():
    common = load_recipe("finetune-common")
    for name, path, val in (("cuhk-pedes", "data/CUHK-PEDES", "val"), ("icfg-pedes", "data/ICFG-PEDES", None), ("rstpreid", "data/RSTPReid", "val")):
        recipe = load_recipe(f"finetune-{name}")
        assert (recipe.data.path, recipe.data.val_split, recipe.train.run_name) == (path, val, f"finetune-{name}")
        assert recipe.method == common.method and recipe.optim == common.optim and recipe.model == common.model
        assert (recipe.train.epochs, recipe.train.batch_size, recipe.data.samples_per_id) == (60, 128, 2)  # the paper's protocol


def test_a_base_beside_the_recipe_with_its_own_base_and_set_overrides(tmp_path):
    (tmp_path / "mine-common.yaml").write_text("base: quickstart\ntrain:\n  max_steps: 7\n  seed: 3\n")
    (tmp_path / "mine.yaml").write_text("base: mine-common.yaml\ntrain:\n  seed: 5\n")
    recipe = load_recipe(tmp_path / "mine.yaml", ["train.batch_size=16"])
    quickstart = load_recipe("quickstart")
    assert (recipe.train.max_steps, recipe.train.seed, recipe.train.batch_size) == (7, 5, 16)
    assert recipe.method == quickstart.method and recipe.model == quickstart.model


def test_cycles_missing_bases_and_unknown_keys_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(GadmsError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(GadmsError, match=r"'base: nowhere.yaml' not found"):
        load_recipe(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: quickstart\ntrain:\n  max_stepz: 3\n")
    with pytest.raises(GadmsError, match="did you mean 'train.max_steps'"):
        load_recipe(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("base: [quickstart]\n")
    with pytest.raises(GadmsError, match="'base' must be"):
        load_recipe(tmp_path / "e.yaml")


def test_the_recipe_json_schema_in_the_docs_is_current_and_states_the_ranges():
    import json
    from pathlib import Path

    from gadms_cli.recipe import recipe_json_schema

    schema = recipe_json_schema()
    written = json.loads((Path(__file__).resolve().parent.parent / "docs" / "recipe-schema.json").read_text())
    assert written == schema, "docs/recipe-schema.json is stale: run `make docs`"
    defs = schema["$defs"]
    assert set(schema["properties"]) == {"model", "data", "method", "optim", "train"}
    assert schema["properties"]["data"]["discriminator"]["propertyName"] == "kind"  # a union keyed on data.kind
    assert set(schema["properties"]["data"]["discriminator"]["mapping"]) == {"benchmark", "webperson"}
    assert defs["BenchmarkDataRecipe"]["properties"]["samples_per_id"]["minimum"] == 1
    assert "samples_per_id" not in defs["WebPersonDataRecipe"]["properties"]
    assert "caption_pairing" not in defs["BenchmarkDataRecipe"]["properties"]
    dropout = defs["AugmentConfig"]["properties"]["caption_dropout"]
    assert (dropout["minimum"], dropout["exclusiveMaximum"]) == (0, 1)
    assert defs["OptimRecipe"]["properties"]["lr"]["exclusiveMinimum"] == 0
    assert defs["MethodRecipe"]["properties"]["noise_alpha"]["maximum"] == 1
    assert defs["TrainRecipe"]["additionalProperties"] is False  # unknown keys are refused


def test_data_is_a_union_keyed_on_kind(tmp_path):
    from gadms_cli.recipe import BenchmarkDataRecipe, WebPersonDataRecipe

    assert isinstance(load_recipe("quickstart").data, BenchmarkDataRecipe)
    assert isinstance(load_recipe("webperson").data, WebPersonDataRecipe)
    # a key of the other kind, written in the recipe, is refused with the kind named
    (tmp_path / "w.yaml").write_text("base: webperson\ndata:\n  samples_per_id: 2\n")
    with pytest.raises(GadmsError, match="unknown key 'data.samples_per_id' for data.kind webperson"):
        load_recipe(tmp_path / "w.yaml")
    with pytest.raises(GadmsError, match="'data.kind' must be 'benchmark' \\| 'webperson', got 'web'"):
        load_recipe("quickstart", ["data.kind=web"])
    # switching the kind with --set drops the file's keys of the other kind, but not keys given with --set
    switched = load_recipe("quickstart", ["data.kind=webperson"])
    assert isinstance(switched.data, WebPersonDataRecipe) and switched.data.path == load_recipe("quickstart").data.path
    with pytest.raises(GadmsError, match="unknown key 'data.lookalike_group' for data.kind webperson"):
        load_recipe("quickstart", ["data.kind=webperson", "data.lookalike_group=2"])
