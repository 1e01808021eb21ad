"""Look-alike batches (data.lookalike_group): caption neighbours by hand, and the sampler's groups."""

from __future__ import annotations

import pytest

from gadms_cli.data.identity_sampler import IdentityBatchSampler
from gadms_cli.data.lookalike_identities import caption_neighbours
from gadms_cli.errors import GadmsError
from gadms_cli.recipe import load_recipe


def test_neighbours_are_the_identities_with_the_most_similar_captions():
    captions = {
        1: ["a woman in a red coat and black boots", "she wears a red coat"],
        2: ["a man in a red coat and black boots", "red coat, black boots"],
        3: ["a man in blue jeans with a green backpack"],
        4: ["a woman in blue jeans carrying a green backpack"],
        5: ["a person with a yellow umbrella"],
    }
    neighbours = caption_neighbours(captions, k=2)
    assert neighbours[1][0] == 2 and neighbours[2][0] == 1
    assert neighbours[3][0] == 4 and neighbours[4][0] == 3
    assert all(len(v) == 2 and pid not in v for pid, v in neighbours.items())
    assert caption_neighbours({7: ["alone"]}, k=3) == {7: []}


def test_batches_are_filled_with_look_alike_groups():
    pids = [pid for pid in range(8) for _ in range(4)]  # 8 identities x 4 samples
    pairs = {0: [1], 1: [0], 2: [3], 3: [2], 4: [5], 5: [4], 6: [7], 7: [6]}
    sampler = IdentityBatchSampler(pids, ids_per_batch=4, samples_per_id=1, seed=3, neighbours=pairs, group_size=2)
    batches = sampler.global_batches()
    assert 6 <= len(batches) <= 8  # at most 32 samples / 4; an epoch ends when fewer than 4 identities have samples left
    for batch in batches:
        ids = {pids[i] for i in batch}
        assert len(ids) == 4
        assert all(pairs[pid][0] in ids for pid in ids), ids  # every identity comes with its look-alike
    random_batches = IdentityBatchSampler(pids, ids_per_batch=4, samples_per_id=1, seed=3).global_batches()
    paired = sum(all(pairs[pids[i]][0] in {pids[j] for j in b} for i in b) for b in random_batches)
    assert paired < len(random_batches)  # random batches do not keep the pairs together
    # no sample is used twice in an epoch
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))


def test_group_size_one_keeps_the_random_batches():
    pids = [pid for pid in range(10) for _ in range(2)]
    plain = IdentityBatchSampler(pids, ids_per_batch=5, samples_per_id=2, seed=1).global_batches()
    grouped_off = IdentityBatchSampler(pids, ids_per_batch=5, samples_per_id=2, seed=1, neighbours={0: [1]}, group_size=1).global_batches()
    assert plain == grouped_off


def test_recipe_key_is_range_checked():
    assert load_recipe("quickstart", ["data.lookalike_group=4"]).data.lookalike_group == 4
    with pytest.raises(GadmsError, match="'data.lookalike_group' must be >= 1"):
        load_recipe("quickstart", ["data.lookalike_group=0"])
