"""Person detectors behind one interface: images in, :class:`PersonDetection` lists out.

Backends:

* ``keypoint-rcnn`` (default): torchvision's Keypoint R-CNN ResNet-50 FPN, trained on COCO,
  gives person boxes and the 17 COCO keypoints in one model (Apache-2.0, ships with
  torchvision). Weights come from ``--detector-weights FILE`` or torchvision's cache
  (``$TORCH_HOME/hub/checkpoints/keypointrcnn_resnet50_fpn_coco-fc266e95.pth``), downloaded
  there on first use when the machine is online. Offline without them: one line naming
  ``--detector-weights``.
* ``yolo``: an ultralytics YOLO pose model (the paper used YOLOv11) when the ``ultralytics``
  package is installed. It is not a dependency of gadms (AGPL-3.0), and ultralytics loads its
  ``.pt`` files by unpickling them: pass only weight files you trust.

Keypoint confidences are brought to [0, 1]: YOLO gives probabilities; Keypoint R-CNN gives
heatmap logits, passed through a sigmoid (so the default visibility threshold 0.5 means
logit > 0).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Protocol, Sequence
from urllib.parse import urlparse

from gadms_cli.curate.person_filter import PersonDetection
from gadms_cli.errors import GadmsError

DETECTORS: tuple[str, ...] = ("keypoint-rcnn", "yolo", "none")
PERSON_LABEL = 1  # Keypoint R-CNN's classes: 0 background, 1 person
MAX_DETECTIONS = 20  # per image; the keypoint head costs ~4 GFLOPs per detection, so keep this small


class Detector(Protocol):
    """Finds persons in images.

    ``name`` goes into the output's ``detector`` column; ``identity`` names the exact weights
    (a resumed run checks it is unchanged).
    """

    name: str
    identity: str

    def detect(self, images: Sequence) -> list[list[PersonDetection]]:
        """One list of detections per RGB ``PIL.Image`` (boxes in that image's pixels)."""
        ...


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- torchvision Keypoint R-CNN ---------------------------------------------------------


class KeypointRCNNDetector:
    """A torchvision ``KeypointRCNN`` in eval mode, run on a batch of images at once."""

    name = "keypoint-rcnn"

    def __init__(self, model, identity: str, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.identity = identity
        self.device = device

    def detect(self, images: Sequence) -> list[list[PersonDetection]]:
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        if not images:
            return []
        tensors = [pil_to_tensor(image).to(self.device, torch.float32).div_(255.0) for image in images]  # 3 x H x W in [0, 1]
        with torch.inference_mode():
            outputs = self.model(tensors)
        results = []
        for output in outputs:
            keep = output["labels"] == PERSON_LABEL
            boxes = output["boxes"][keep].cpu().tolist()  # N x 4, pixels
            scores = output["scores"][keep].cpu().tolist()  # N
            points = output["keypoints"][keep].cpu()  # N x 17 x 3 (x, y, 1)
            confidences = torch.sigmoid(output["keypoints_scores"][keep].float()).cpu()  # N x 17 in (0, 1)
            detections = []
            for box, score, xy, confidence in zip(boxes, scores, points.tolist(), confidences.tolist()):
                keypoints = tuple((p[0], p[1], c) for p, c in zip(xy, confidence))
                detections.append(PersonDetection(box=tuple(box), score=float(score), keypoints=keypoints))
            results.append(detections)
        return results


def _keypoint_rcnn_model(min_size: int, max_size: int, score_floor: float, max_detections: int):
    """An untrained Keypoint R-CNN ResNet-50 FPN (2 classes, 17 keypoints).

    ``score_floor`` is the box score below which detections are not even returned (nor
    sent through the costly keypoint head); set it to the lowest score the filter looks at.
    ``max_detections`` caps the detections per image.
    """
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    return keypointrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=2,
        num_keypoints=17,
        min_size=min_size,
        max_size=max_size,
        box_score_thresh=score_floor,
        box_detections_per_img=max_detections,
    )


def _proxy_set() -> bool:
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


def _offline_reason(url: str) -> str | None:
    """Why ``url``'s host cannot be reached, or None when it looks reachable (or a proxy decides)."""
    if _proxy_set():
        return None
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"cannot connect to {host} ({exc.strerror or exc})"
    return None


def _read_state_dict(path: Path) -> dict:
    """A state dict from a ``.safetensors`` file or a tensors-only ``.pth`` (never unpickles objects)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read safely
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GadmsError(f"--detector-weights {path}: cannot read it as tensors ({first_line}); pass a .pth state dict or .safetensors") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise GadmsError(f"--detector-weights {path}: holds a {type(state).__name__}, not a state dict")
    return state


def keypoint_rcnn_state_dict(weights_file: Path | None) -> tuple[dict, str]:
    """(state dict, identity) of the Keypoint R-CNN weights: the given file, else torchvision's cache/download."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise GadmsError(f"--detector-weights {path}: no such file")
        return _read_state_dict(path), f"file:{path.name}:{path.stat().st_size}"

    import torch

    url = KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    identity = f"torchvision:{cached.name}"
    if cached.is_file():
        return _read_state_dict(cached), identity
    hint = f"download {url} where there is internet and pass --detector-weights FILE (or put it in {cached.parent})"
    reason = _offline_reason(url)
    if reason is not None:
        raise GadmsError(f"Keypoint R-CNN weights are not in torchvision's cache and {reason}; {hint}")
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        raise GadmsError(f"cannot download the Keypoint R-CNN weights ({str(exc).splitlines()[0]}); {hint}") from None
    return state, identity


def load_keypoint_rcnn(
    weights_file: Path | None = None,
    *,
    device: str = "auto",
    min_size: int = 800,
    max_size: int = 1333,
    score_floor: float = 0.5,
    max_detections: int = MAX_DETECTIONS,
) -> KeypointRCNNDetector:
    """The COCO-trained Keypoint R-CNN (``min_size``/``max_size``: the shorter/longer side, in pixels,
    images are resized to inside the model; 800/1333 is what it was trained with)."""
    state, identity = keypoint_rcnn_state_dict(weights_file)
    model = _keypoint_rcnn_model(min_size, max_size, score_floor, max_detections)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        where = weights_file or "the cached weights"
        detail = str(exc).splitlines()[0]
        raise GadmsError(f"--detector-weights {where}: not Keypoint R-CNN ResNet-50 FPN weights ({detail})") from None
    return KeypointRCNNDetector(model, identity, resolve_device(device))


def random_keypoint_rcnn(
    seed: int = 0,
    *,
    device: str = "cpu",
    min_size: int = 800,
    max_size: int = 1333,
    score_floor: float = 0.5,
    max_detections: int = MAX_DETECTIONS,
) -> KeypointRCNNDetector:
    """Keypoint R-CNN with RANDOM weights: its detections are meaningless.

    For plumbing tests and speed measurements only (the compute per image is the real one).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _keypoint_rcnn_model(min_size, max_size, score_floor, max_detections)
    return KeypointRCNNDetector(model, f"random-init:{seed}", device)


# --- ultralytics YOLO (optional) ------------------------------------------------------


class YoloDetector:
    """An ultralytics YOLO model; pose models give keypoints, plain detection models do not."""

    name = "yolo"

    def __init__(self, weights_file: Path | None, *, device: str = "auto", score_floor: float = 0.5) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise GadmsError(
                "--detector yolo needs the ultralytics package (pip install ultralytics; AGPL-3.0, not a gadms "
                "dependency); or use --detector keypoint-rcnn"
            ) from None
        if weights_file is None:
            raise GadmsError("--detector yolo needs --detector-weights FILE (a YOLO pose model such as yolo11x-pose.pt)")
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise GadmsError(f"--detector-weights {path}: no such file")
        self.model = YOLO(str(path))
        self.identity = f"yolo:{path.name}:{path.stat().st_size}"
        self.device = resolve_device(device)
        self.score_floor = score_floor

    def detect(self, images: Sequence) -> list[list[PersonDetection]]:
        if not images:
            return []
        results = self.model.predict(list(images), conf=self.score_floor, classes=[0], device=self.device, verbose=False)
        detections = []
        for result in results:
            boxes = result.boxes.xyxy.cpu().tolist()
            scores = result.boxes.conf.cpu().tolist()
            keypoints = result.keypoints.data.cpu().tolist() if result.keypoints is not None else [None] * len(boxes)
            detections.append(
                [
                    PersonDetection(box=tuple(box), score=float(score), keypoints=tuple(map(tuple, points)) if points else None)
                    for box, score, points in zip(boxes, scores, keypoints)
                ]
            )
        return detections


def build_detector(
    kind: str, weights_file: Path | None, *, device: str = "auto", score_floor: float = 0.5, min_size: int = 800, max_size: int = 1333
) -> Detector | None:
    """The detector named by ``--detector`` (None for ``none``: keep every image whole)."""
    if kind == "keypoint-rcnn":
        return load_keypoint_rcnn(weights_file, device=device, min_size=min_size, max_size=max_size, score_floor=score_floor)
    if kind == "yolo":
        return YoloDetector(weights_file, device=device, score_floor=score_floor)
    if kind == "none":
        return None
    raise GadmsError(f"--detector must be one of {', '.join(DETECTORS)}, got {kind!r}")
