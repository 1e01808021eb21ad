"""Gallery index: incremental updates, unreadable files, atomic writes, model fingerprints.

Every embedding the index holds is checked against an encoding done by hand in the test
(eval transform + the model's image tower + L2 normalisation); every count against what
the test did to the folder.
"""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gadms_cli.data.transforms import eval_transform
from gadms_cli.errors import GadmsError
from gadms_cli.model.checkpoint import load_checkpoint, save_checkpoint
from gadms_cli.model.factory import create_person_clip
from gadms_cli.retrieve.fingerprint import model_fingerprint
from gadms_cli.retrieve.gallery_files import find_images
from gadms_cli.retrieve.gallery_index import (
    INDEX_DIRNAME,
    MANIFEST_FILE,
    index_directory,
    load_index,
    update_index,
)

SIZE = (96, 32)  # gadms-tiny's image size (height, width)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny").eval()


@pytest.fixture(scope="module")
def fingerprint(model):
    return model_fingerprint(model)


def draw(path, seed):
    """A 32x96 picture of random coloured blocks (distinct per seed), saved by its extension."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (6, 2, 3), generator=generator, dtype=torch.uint8)
    pixels = blocks.repeat_interleave(16, dim=0).repeat_interleave(16, dim=1)  # [96, 32, 3]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)


def by_hand(model, path):
    """Independent reference: the L2-normalised embedding of one image file [D]."""
    with torch.no_grad():
        image = eval_transform(SIZE)(Image.open(path)).unsqueeze(0)
        return F.normalize(model.encode_image(image), dim=-1)[0]


class EncodeCounter:
    """Wraps a model's encode_image and counts the images it is given; can fail on a chosen call."""

    def __init__(self, model, fail_on_call=None, error=RuntimeError):
        self.model = model
        self.original = model.encode_image
        self.images = 0
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.error = error

    def __call__(self, images):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise self.error("injected failure")
        self.images += len(images)
        return self.original(images)


def index(model, fingerprint, gallery, monkeypatch, **kwargs):
    counter = EncodeCounter(model, kwargs.pop("fail_on_call", None), kwargs.pop("error", RuntimeError))
    monkeypatch.setattr(model, "encode_image", counter)
    try:
        result = update_index(model, gallery, fingerprint=fingerprint, transform=eval_transform(SIZE), batch_size=4, **kwargs)
    finally:
        monkeypatch.undo()
    return result, counter


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "photos"
    names = ["a.jpg", "b.png", "sub/c.jpeg", "sub/deeper/d.webp", "e.bmp", "F.JPG"]
    for seed, name in enumerate(names):
        draw(root / name, seed)
    (root / "notes.txt").write_text("not an image")
    draw(root / ".hidden" / "h.jpg", 99)  # hidden folders are skipped
    return root


def test_walk_finds_every_image_type_recursively_and_skips_hidden_and_other_files(gallery):
    found = [rel for rel, _ in find_images(gallery)]
    assert found == ["F.JPG", "a.jpg", "b.png", "e.bmp", "sub/c.jpeg", "sub/deeper/d.webp"]


def test_first_run_encodes_every_image_as_by_hand_and_second_run_encodes_nothing(model, fingerprint, gallery, monkeypatch):
    (first, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.images == 6 and report.encoded == 6 and report.images == 6
    assert [e.path for e in first.entries] == [rel for rel, _ in find_images(gallery)]
    for row, path in enumerate(first.paths()):
        assert torch.allclose(first.embeddings[row], by_hand(model, path), atol=1e-5)
    assert first.directory == (gallery / INDEX_DIRNAME / fingerprint[:16]).resolve()
    embeddings_file = first.directory / first.embeddings_file
    written = embeddings_file.stat().st_mtime_ns

    (second, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.calls == 0 and report.encoded == 0 and report.hashed == 0 and report.reused == 6
    assert second.embeddings_file == first.embeddings_file and embeddings_file.stat().st_mtime_ns == written
    assert torch.equal(second.embeddings, first.embeddings)


def test_changed_file_is_reencoded_deleted_dropped_new_added(model, fingerprint, gallery, monkeypatch):
    (first, _), _ = index(model, fingerprint, gallery, monkeypatch)
    draw(gallery / "b.png", 1000)  # new content
    stat = (gallery / "b.png").stat()
    os.utime(gallery / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    (gallery / "e.bmp").unlink()
    draw(gallery / "sub" / "new.jpg", 2000)

    (second, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.images == 2 and report.encoded == 2 and report.dropped == 1 and report.reused == 4
    paths = [e.path for e in second.entries]
    assert paths == ["F.JPG", "a.jpg", "b.png", "sub/c.jpeg", "sub/deeper/d.webp", "sub/new.jpg"]
    for row, path in enumerate(second.paths()):
        assert torch.allclose(second.embeddings[row], by_hand(model, path), atol=1e-5), path
    old_b = first.embeddings[[e.path for e in first.entries].index("b.png")]
    assert not torch.allclose(second.embeddings[paths.index("b.png")], old_b, atol=1e-3)
    # Only the new index's embeddings file is left.
    assert sorted(p.name for p in second.directory.glob("embeddings-*")) == [second.embeddings_file]


def test_touched_renamed_and_duplicated_files_reuse_embeddings(model, fingerprint, gallery, monkeypatch):
    index(model, fingerprint, gallery, monkeypatch)
    os.utime(gallery / "a.jpg", ns=(1, 1_000_000_000))  # same bytes, new time
    (gallery / "b.png").rename(gallery / "renamed.png")
    draw(gallery / "new.jpg", 3000)
    shutil.copy(gallery / "new.jpg", gallery / "new-copy.jpg")

    (updated, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.images == 1 and report.encoded == 1  # the two identical new files are encoded once
    assert report.dropped == 1  # b.png
    assert report.hashed == 4  # a.jpg, renamed.png, new.jpg and new-copy.jpg; nothing else changed
    for row, path in enumerate(updated.paths()):
        assert torch.allclose(updated.embeddings[row], by_hand(model, path), atol=1e-5), path
    assert next(e for e in updated.entries if e.path == "a.jpg").mtime_ns == 1_000_000_000


def test_corrupt_images_are_skipped_counted_listed_and_not_retried(model, fingerprint, gallery, monkeypatch):
    (gallery / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
    good = (gallery / "a.jpg").read_bytes()
    (gallery / "truncated.jpg").write_bytes(good[: len(good) // 2])

    (built, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert report.unreadable == ["garbage.jpg", "truncated.jpg"]
    assert report.images == 6 and counter.images == 6
    assert "garbage.jpg" not in [e.path for e in built.entries]

    (_, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.calls == 0 and report.unreadable == ["garbage.jpg", "truncated.jpg"]

    draw(gallery / "garbage.jpg", 77)  # fixed: now it is encoded
    (fixed, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.images == 1 and report.unreadable == ["truncated.jpg"]
    row = fixed.row_of("garbage.jpg")
    assert torch.allclose(fixed.embeddings[row], by_hand(model, gallery / "garbage.jpg"), atol=1e-5)


def test_a_gallery_where_nothing_decodes_gives_an_empty_index(model, fingerprint, tmp_path, monkeypatch):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "x.png").write_bytes(b"\x89PNG broken")
    (built, report), _ = index(model, fingerprint, root, monkeypatch)
    assert len(built) == 0 and tuple(built.embeddings.shape) == (0, 64) and report.unreadable == ["x.png"]
    reloaded, problem = load_index(built.directory, root.resolve(), fingerprint)
    assert problem is None and len(reloaded) == 0


def snapshot(directory, gallery, fingerprint):
    loaded, problem = load_index(directory, gallery.resolve(), fingerprint)
    assert problem is None and loaded is not None
    return [e.path for e in loaded.entries], loaded.embeddings.clone()


def test_failure_while_encoding_leaves_the_previous_index_valid(model, fingerprint, gallery, monkeypatch):
    (first, _), _ = index(model, fingerprint, gallery, monkeypatch)
    before = snapshot(first.directory, gallery, fingerprint)
    for seed in range(10):
        draw(gallery / "more" / f"{seed}.jpg", 500 + seed)
    with pytest.raises(RuntimeError, match="injected"):
        index(model, fingerprint, gallery, monkeypatch, fail_on_call=2, chunk_files=4, save_interval_s=None)
    after = snapshot(first.directory, gallery, fingerprint)
    assert after[0] == before[0] and torch.equal(after[1], before[1])

    (final, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert report.encoded == 10 and len(final) == 16


def test_failure_while_replacing_the_manifest_leaves_the_previous_index_valid(model, fingerprint, gallery, monkeypatch):
    (first, _), _ = index(model, fingerprint, gallery, monkeypatch)
    before = snapshot(first.directory, gallery, fingerprint)
    draw(gallery / "late.jpg", 42)
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).endswith(MANIFEST_FILE):
            raise OSError("injected: disk full")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(GadmsError, match="cannot write the index .* injected: disk full"):
        update_index(model, gallery, fingerprint=fingerprint, transform=eval_transform(SIZE))
    monkeypatch.undo()
    after = snapshot(first.directory, gallery, fingerprint)
    assert after[0] == before[0] and torch.equal(after[1], before[1])
    assert not list(first.directory.glob(".*.tmp"))  # the half-done manifest was removed

    (final, report), _ = index(model, fingerprint, gallery, monkeypatch)
    assert report.encoded == 1 and "late.jpg" in [e.path for e in final.entries]
    assert sorted(p.name for p in final.directory.glob("embeddings-*")) == [final.embeddings_file]


def test_interrupt_saves_the_chunks_done_so_the_next_run_resumes(model, fingerprint, tmp_path, monkeypatch):
    root = tmp_path / "big"
    for seed in range(12):
        draw(root / f"{seed:02d}.png", seed)
    with pytest.raises(KeyboardInterrupt):
        index(model, fingerprint, root, monkeypatch, fail_on_call=3, error=KeyboardInterrupt, chunk_files=4, save_interval_s=None)
    directory = index_directory(root, fingerprint)
    saved, _ = snapshot(directory, root, fingerprint)
    assert saved == [f"{seed:02d}.png" for seed in range(8)]  # two chunks of 4 finished before the third failed

    (final, report), counter = index(model, fingerprint, root, monkeypatch)
    assert counter.images == 4 and report.reused == 8 and len(final) == 12
    for row, path in enumerate(final.paths()):
        assert torch.allclose(final.embeddings[row], by_hand(model, path), atol=1e-5)


def test_damaged_index_is_rebuilt_with_a_warning(model, fingerprint, gallery, monkeypatch):
    (first, _), _ = index(model, fingerprint, gallery, monkeypatch)
    (first.directory / first.embeddings_file).write_bytes(b"garbage")
    (rebuilt, report), counter = index(model, fingerprint, gallery, monkeypatch)
    assert counter.images == 6 and len(rebuilt) == 6
    assert len(report.warnings) == 1 and "damaged" in report.warnings[0]


def test_index_folder_option_keeps_the_gallery_untouched(model, fingerprint, gallery, tmp_path, monkeypatch):
    elsewhere = tmp_path / "indexes"
    (built, _), _ = index(model, fingerprint, gallery, monkeypatch, index_root=elsewhere)
    assert built.directory == (elsewhere / fingerprint[:16]).resolve()
    assert not (gallery / INDEX_DIRNAME).exists()


def test_fingerprint_follows_embedding_weights_only(model, fingerprint, tmp_path):
    saved = save_checkpoint(model, tmp_path / "ckpt")
    assert model_fingerprint(load_checkpoint(saved)) == fingerprint
    changed = load_checkpoint(saved)
    with torch.no_grad():
        changed.clip.visual.proj[0, 0] += 1e-3
    assert model_fingerprint(changed) != fingerprint
    with_heads = create_person_clip(arch="gadms-tiny", with_mtp=True, num_classes=3)
    with_heads.clip.load_state_dict(model.clip.state_dict())
    assert model_fingerprint(with_heads) == fingerprint  # decoder and classifier never touch an embedding
