"""The paper's person filter as pure functions over detections (docs/method.md, "WebPerson data construction").

A detector (see :mod:`gadms_cli.curate.detectors`) turns an image into a list of
:class:`PersonDetection` (a box, a confidence, and optionally the 17 COCO keypoints).
The rules below decide which persons an image contributes:

* the box confidence is above ``min_score`` (0.85),
* the box's shorter side is above ``min_short_side`` pixels (90),
* the box's height:width lies between ``min_aspect`` and ``max_aspect`` (2:1 to 4:1),
* at least ``min_keypoints`` keypoints are visible (8), among them at least
  ``min_hip_keypoints`` hips (1) and ``min_head_keypoints`` head keypoints (2: nose, eyes, ears);

plus how many persons an image may hold (``max_persons``) and how the kept person is cut out
(``crop``: the person box widened by ``margin``, or the whole image). Nothing here touches
pixels or models, so every rule is tested on hand-made detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# COCO keypoint order (the order Keypoint R-CNN and YOLO pose models output).
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
HEAD_KEYPOINTS: frozenset[int] = frozenset(range(0, 5))
HIP_KEYPOINTS: frozenset[int] = frozenset({11, 12})
CROP_POLICIES: tuple[str, ...] = ("box", "image")

# Why a person (or an image) is rejected, in the order the rules are checked.
PERSON_REJECTIONS: tuple[str, ...] = ("low_score", "small_box", "aspect_ratio", "few_keypoints", "no_hip", "few_head_keypoints")
IMAGE_REJECTIONS: tuple[str, ...] = ("no_person", "too_many_persons") + PERSON_REJECTIONS

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in image pixels, x to the right, y down
Keypoint = tuple[float, float, float]  # (x, y, confidence in [0, 1]) in image pixels


@dataclass(frozen=True)
class PersonDetection:
    """One detected person: ``box`` (x0, y0, x1, y1) pixels, ``score`` in [0, 1], and
    ``keypoints`` (17 COCO keypoints as (x, y, confidence)) or None for a detector without pose."""

    box: Box
    score: float
    keypoints: tuple[Keypoint, ...] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class FilterRules:
    """The filter settings; the defaults are the paper's.

    Strict comparisons follow the paper's wording: ``score > min_score``,
    ``min(height, width) > min_short_side``; the aspect bounds are inclusive.
    A keypoint is visible when its confidence is ``>= keypoint_threshold``.
    Detections scoring ``>= count_score`` count as persons for ``max_persons``
    (a crowd of confident-enough people makes the image not person-centric even
    when only one of them passes every rule).
    """

    min_score: float = 0.85
    min_short_side: float = 90.0
    min_aspect: float = 2.0
    max_aspect: float = 4.0
    min_keypoints: int = 8
    min_hip_keypoints: int = 1
    min_head_keypoints: int = 2
    keypoint_threshold: float = 0.5
    max_persons: int = 1
    count_score: float = 0.5
    crop: str = "box"
    margin: float = 0.1

    def problem(self) -> str | None:
        """The first invalid setting as a one-line message naming its flag, or None."""
        if not 0.0 <= self.min_score <= 1.0:
            return f"--min-score must be in [0, 1], got {self.min_score}"
        if not 0.0 <= self.count_score <= 1.0:
            return f"--count-score must be in [0, 1], got {self.count_score}"
        if self.min_short_side < 0:
            return f"--min-short-side must be 0 or more pixels, got {self.min_short_side}"
        if not 0 < self.min_aspect <= self.max_aspect:
            return f"--min-aspect ({self.min_aspect}) must be > 0 and <= --max-aspect ({self.max_aspect})"
        if not 0 <= self.min_keypoints <= len(COCO_KEYPOINTS):
            return f"--min-keypoints must be in 0..{len(COCO_KEYPOINTS)}, got {self.min_keypoints}"
        if not 0 <= self.min_hip_keypoints <= len(HIP_KEYPOINTS):
            return f"--min-hip-keypoints must be in 0..{len(HIP_KEYPOINTS)}, got {self.min_hip_keypoints}"
        if not 0 <= self.min_head_keypoints <= len(HEAD_KEYPOINTS):
            return f"--min-head-keypoints must be in 0..{len(HEAD_KEYPOINTS)}, got {self.min_head_keypoints}"
        if self.max_persons < 1:
            return f"--max-persons must be 1 or more, got {self.max_persons}"
        if self.crop not in CROP_POLICIES:
            return f"--crop must be one of {', '.join(CROP_POLICIES)}, got {self.crop!r}"
        if self.margin < 0:
            return f"--margin must be 0 or more (a fraction of the box size), got {self.margin}"
        return None

    @property
    def needs_keypoints(self) -> bool:
        return self.min_keypoints > 0 or self.min_hip_keypoints > 0 or self.min_head_keypoints > 0


@dataclass(frozen=True)
class Selection:
    """What the filter decided for one image: the persons kept (best score first) or why none was."""

    persons: list[PersonDetection] = field(default_factory=list)
    rejection: str | None = None


def visible_keypoints(detection: PersonDetection, threshold: float) -> list[int]:
    """Indices (COCO order) of the keypoints whose confidence is ``>= threshold``."""
    if detection.keypoints is None:
        return []
    return [index for index, (_, _, confidence) in enumerate(detection.keypoints) if confidence >= threshold]


def person_rejection(detection: PersonDetection, rules: FilterRules) -> str | None:
    """The first rule ``detection`` breaks (a name from ``PERSON_REJECTIONS``), or None when it passes."""
    if not detection.score > rules.min_score:
        return "low_score"
    if not min(detection.width, detection.height) > rules.min_short_side:
        return "small_box"
    aspect = detection.height / detection.width if detection.width > 0 else float("inf")
    if not rules.min_aspect <= aspect <= rules.max_aspect:
        return "aspect_ratio"
    visible = set(visible_keypoints(detection, rules.keypoint_threshold))
    if len(visible) < rules.min_keypoints:
        return "few_keypoints"
    if len(visible & HIP_KEYPOINTS) < rules.min_hip_keypoints:
        return "no_hip"
    if len(visible & HEAD_KEYPOINTS) < rules.min_head_keypoints:
        return "few_head_keypoints"
    return None


def select_persons(detections: list[PersonDetection], rules: FilterRules) -> Selection:
    """Apply the image-level rules, then the person rules.

    * no detection scoring ``>= count_score`` and none passing the rules -> ``no_person``;
    * more than ``max_persons`` detections scoring ``>= count_score`` -> ``too_many_persons``;
    * otherwise the persons passing every rule, best score first (at most ``max_persons``);
      when none passes, the rejection is the rule broken by the best-scoring detection.
    """
    ranked = sorted(detections, key=lambda d: d.score, reverse=True)
    counted = [d for d in ranked if d.score >= rules.count_score]
    if len(counted) > rules.max_persons:
        return Selection(rejection="too_many_persons")
    passing = [d for d in ranked if person_rejection(d, rules) is None][: rules.max_persons]
    if passing:
        return Selection(persons=passing)
    if not counted:
        return Selection(rejection="no_person")
    return Selection(rejection=person_rejection(ranked[0], rules))


def crop_region(box: Box, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The pixel rectangle (left, top, right, bottom) to cut for ``box``, widened by ``margin``.

    The box grows by ``margin * width`` left and right and ``margin * height`` top and
    bottom, is rounded outward to whole pixels and clipped to the image
    (``image_size`` is (width, height)). ``right``/``bottom`` are exclusive, as in PIL's crop.
    """
    import math

    width, height = image_size
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    left = min(max(0, math.floor(x0 - dx)), width - 1)
    top = min(max(0, math.floor(y0 - dy)), height - 1)
    right = min(width, math.ceil(x1 + dx))
    bottom = min(height, math.ceil(y1 + dy))
    return left, top, max(right, left + 1), max(bottom, top + 1)
