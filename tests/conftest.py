"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a second one stalls when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def training_sketchpedes(tmp_path_factory):
    """A small noisy SketchPedes (12 train / 3 val identities x 2 images, 96x32) for training-loop tests."""
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

    out = tmp_path_factory.mktemp("sketchpedes")
    generate_sketchpedes(out, SynthConfig(train_ids=12, val_ids=3, test_ids=0, images_per_id=2, height=96, width=32, noise=0.3))
    return out


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide state; each training test starts and ends without it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)
