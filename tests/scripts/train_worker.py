"""Run by tests/test_train.py under `accelerate launch`: train a few steps, then every
process (not only the main one: this is a test) writes its parameters and score table."""

import sys
from pathlib import Path

import torch
from accelerate.state import PartialState
from safetensors.torch import save_file

from gadms_cli.recipe import load_recipe
from gadms_cli.train import train

recipe_file, run_dir, out_dir, *overrides = sys.argv[1:]
result = train(load_recipe(recipe_file, overrides), run_dir=run_dir)
rank = PartialState().process_index
tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
if result.score_table is not None:
    tensors["score_table"] = result.score_table
Path(out_dir).mkdir(parents=True, exist_ok=True)
save_file(tensors, str(Path(out_dir) / f"rank{rank}.safetensors"))
torch.distributed.barrier() if torch.distributed.is_initialized() else None
