"""The person filter rules on hand-made detections (no model involved)."""

from __future__ import annotations

import dataclasses

import pytest

from gadms_cli.curate.person_filter import (
    COCO_KEYPOINTS,
    FilterRules,
    PersonDetection,
    crop_region,
    person_rejection,
    select_persons,
    visible_keypoints,
)

RULES = FilterRules()
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR = 0, 1, 2, 3, 4
LEFT_HIP, RIGHT_HIP = 11, 12


def keypoints(visible: set[int], confidence: float = 0.9) -> tuple:
    """17 COCO keypoints; those in ``visible`` get ``confidence``, the others 0.1."""
    return tuple((float(i), float(2 * i), confidence if i in visible else 0.1) for i in range(17))


ALL = set(range(17))


def person(box=(10.0, 10.0, 110.0, 310.0), score=0.95, visible=ALL, confidence=0.9) -> PersonDetection:
    """Default: a 100 x 300 box (aspect 3), score 0.95, every keypoint visible."""
    return PersonDetection(box=box, score=score, keypoints=keypoints(visible, confidence))


def test_defaults_are_the_papers():
    assert (RULES.min_score, RULES.min_short_side, RULES.min_aspect, RULES.max_aspect) == (0.85, 90.0, 2.0, 4.0)
    assert (RULES.min_keypoints, RULES.min_hip_keypoints, RULES.min_head_keypoints) == (8, 1, 2)
    assert COCO_KEYPOINTS[0] == "nose" and COCO_KEYPOINTS[11:13] == ("left_hip", "right_hip")
    assert RULES.problem() is None


def test_a_good_person_passes():
    assert person_rejection(person(), RULES) is None


@pytest.mark.parametrize(
    "score, expected",
    [(0.85, "low_score"), (0.8500001, None), (0.5, "low_score"), (1.0, None)],
)
def test_score_must_be_strictly_above_085(score, expected):
    assert person_rejection(person(score=score), RULES) == expected


@pytest.mark.parametrize(
    "width, height, expected",
    [
        (90.0, 270.0, "small_box"),  # shorter side exactly 90: not above 90
        (90.5, 271.5, None),  # aspect 3, shorter side 90.5
        (100.0, 199.0, "aspect_ratio"),  # 1.99:1
        (100.0, 200.0, None),  # exactly 2:1 is allowed
        (100.0, 400.0, None),  # exactly 4:1 is allowed
        (100.0, 401.0, "aspect_ratio"),  # 4.01:1
        (300.0, 100.0, "aspect_ratio"),  # lying down / wide box
    ],
)
def test_box_size_and_aspect(width, height, expected):
    detection = person(box=(5.0, 7.0, 5.0 + width, 7.0 + height))
    assert person_rejection(detection, RULES) == expected


def test_keypoint_counts():
    head2_hip1 = {NOSE, LEFT_EYE, LEFT_HIP, 5, 6, 7, 8, 13}  # 8 visible: 2 head, 1 hip
    assert person_rejection(person(visible=head2_hip1), RULES) is None
    assert person_rejection(person(visible=head2_hip1 - {13}), RULES) == "few_keypoints"  # 7 visible
    no_hip = {NOSE, LEFT_EYE, 5, 6, 7, 8, 9, 10, 13}  # 9 visible, no hip
    assert person_rejection(person(visible=no_hip), RULES) == "no_hip"
    one_head = {NOSE, LEFT_HIP, RIGHT_HIP, 5, 6, 7, 8, 9, 10}  # 9 visible, 1 head keypoint
    assert person_rejection(person(visible=one_head), RULES) == "few_head_keypoints"
    ears_count_as_head = {LEFT_EAR, RIGHT_EAR, RIGHT_HIP, 5, 6, 7, 8, 9}
    assert person_rejection(person(visible=ears_count_as_head), RULES) is None


def test_keypoint_visibility_threshold_is_inclusive():
    at_threshold = person(confidence=0.5)
    assert visible_keypoints(at_threshold, 0.5) == list(range(17))
    assert visible_keypoints(at_threshold, 0.51) == []
    assert person_rejection(person(confidence=0.49), RULES) == "few_keypoints"


def test_detector_without_keypoints_needs_keypoint_rules_off():
    no_pose = PersonDetection(box=(0.0, 0.0, 100.0, 300.0), score=0.99, keypoints=None)
    assert person_rejection(no_pose, RULES) == "few_keypoints"
    boxes_only = dataclasses.replace(RULES, min_keypoints=0, min_hip_keypoints=0, min_head_keypoints=0)
    assert not boxes_only.needs_keypoints
    assert person_rejection(no_pose, boxes_only) is None


def test_rules_are_checked_in_order():
    # Breaks every rule at once: the score is reported first.
    bad = PersonDetection(box=(0.0, 0.0, 50.0, 50.0), score=0.1, keypoints=keypoints(set()))
    assert person_rejection(bad, RULES) == "low_score"
    assert person_rejection(dataclasses.replace(bad, score=0.9), RULES) == "small_box"


def test_select_persons_image_level_rules():
    good = person(score=0.95)
    faint = person(score=0.3)  # below count_score 0.5: not a person for max_persons
    assert select_persons([], RULES).rejection == "no_person"
    assert select_persons([faint], RULES).rejection == "no_person"
    assert select_persons([good, faint], RULES).persons == [good]
    second = person(box=(200.0, 10.0, 300.0, 310.0), score=0.6)  # fails low_score, but counts as a person
    assert select_persons([good, second], RULES).rejection == "too_many_persons"
    two_allowed = dataclasses.replace(RULES, max_persons=2)
    assert select_persons([second, good], two_allowed).persons == [good]  # only the passing one, best first
    other = person(box=(200.0, 10.0, 300.0, 310.0), score=0.9)
    assert select_persons([other, good], two_allowed).persons == [good, other]
    # No passing person: the rejection is the best-scoring detection's first broken rule.
    squat = person(box=(0.0, 0.0, 200.0, 200.0), score=0.97)
    assert select_persons([squat], RULES).rejection == "aspect_ratio"


def test_crop_region_adds_margin_rounds_outward_and_clips():
    # box 100 x 200 at (50, 40); margin 0.1 -> 10 px left/right, 20 px top/bottom
    assert crop_region((50.0, 40.0, 150.0, 240.0), (400, 400), 0.1) == (40, 20, 160, 260)
    # fractional edges round outward
    assert crop_region((10.5, 20.2, 30.4, 60.7), (400, 400), 0.0) == (10, 20, 31, 61)
    # clipped to a 120 x 250 image
    assert crop_region((50.0, 40.0, 150.0, 240.0), (120, 250), 0.1) == (40, 20, 120, 250)
    # margin 0 and a box covering the image
    assert crop_region((0.0, 0.0, 64.0, 128.0), (64, 128), 0.0) == (0, 0, 64, 128)


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"min_score": 1.5}, "--min-score"),
        ({"min_aspect": 5.0}, "--min-aspect"),
        ({"min_keypoints": 18}, "--min-keypoints"),
        ({"min_hip_keypoints": 3}, "--min-hip-keypoints"),
        ({"min_head_keypoints": 6}, "--min-head-keypoints"),
        ({"max_persons": 0}, "--max-persons"),
        ({"crop": "face"}, "--crop"),
        ({"margin": -0.1}, "--margin"),
    ],
)
def test_bad_settings_name_their_flag(change, flag):
    assert flag in dataclasses.replace(RULES, **change).problem()
