"Metrics against naive pixel loops and hand-worked matrices."
import numpy as np
import pytest
import torch

from ssrs_nb.metrics import confusion_matrix, segmentation_scores, format_row, format_header


def cm_naive(pred, target, C, ignore=255):
    cm = np.zeros((C, C), np.int64)
    for p, t in zip(np.ravel(pred), np.ravel(target)):
        if t != ignore: cm[int(t), int(p)] += 1
    return cm


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("shape,C", [((17, 23), 6), ((2, 9, 11), 7), ((50,), 2)])
def test_confusion_matrix_matches_loop(dtype, shape, C):
    rng = np.random.default_rng(C + len(shape))
    t = rng.integers(0, C, shape).astype(dtype); p = rng.integers(0, C, shape).astype(dtype)
    t.reshape(-1)[::5] = 255 if np.iinfo(dtype).max >= 255 else t.reshape(-1)[::5]
    ref = cm_naive(p, t, C)
    np.testing.assert_array_equal(confusion_matrix(p, t, C), ref)
    got = confusion_matrix(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(t.astype(np.int64)), C)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), ref)


def test_confusion_matrix_accumulates_and_validates():
    rng = np.random.default_rng(0)
    tiles = [(rng.integers(0, 6, (8, 8)), rng.integers(0, 6, (8, 8))) for _ in range(3)]
    acc = sum(confusion_matrix(p, t, 6) for p, t in tiles)
    np.testing.assert_array_equal(acc, cm_naive(np.concatenate([p.ravel() for p, _ in tiles]),
                                                 np.concatenate([t.ravel() for _, t in tiles]), 6))
    with pytest.raises(ValueError, match="class id 6"): confusion_matrix(np.zeros(4, int), np.full(4, 6), 6)
    with pytest.raises(ValueError, match="class id 9"): confusion_matrix(np.full(4, 9), np.zeros(4, int), 6)
    with pytest.raises(ValueError, match="same shape"): confusion_matrix(np.zeros(3, int), np.zeros(4, int), 6)
    np.testing.assert_array_equal(confusion_matrix(np.array([0, 1]), np.array([255, 255]), 2), np.zeros((2, 2)))


def test_scores_hand_worked():
    cm = np.array([[5, 1, 1], [0, 3, 1], [1, 0, 0]])
    s = segmentation_scores(cm)
    np.testing.assert_allclose(s["f1"], [10 / 13, 6 / 8, 0.0])
    np.testing.assert_allclose(s["iou"], [5 / 8, 3 / 5, 0.0])
    np.testing.assert_allclose(s["precision"], [5 / 6, 3 / 4, 0.0]); np.testing.assert_allclose(s["recall"], [5 / 7, 3 / 4, 0.0])
    assert s["oa"] == pytest.approx(8 / 12) and s["mf1"] == pytest.approx((10 / 13 + 6 / 8) / 3)
    s2 = segmentation_scores(cm, eval_classes=[0, 1])
    assert s2["miou"] == pytest.approx((5 / 8 + 3 / 5) / 2) and s2["oa"] == pytest.approx(8 / 12)


def test_absent_classes_are_nan_and_left_out():
    cm = np.zeros((6, 6), int); cm[0, 0], cm[1, 1], cm[1, 0], cm[5, 5] = 10, 4, 2, 7
    s = segmentation_scores(cm, dataset="vaihingen")
    assert all(np.isnan(s["f1"][c]) and np.isnan(s["iou"][c]) for c in (2, 3, 4))
    assert s["mf1"] == pytest.approx((20 / 22 + 8 / 10) / 2)          # clutter (5) left out of the means
    assert s["miou"] == pytest.approx((10 / 12 + 4 / 6) / 2)
    assert s["oa"] == pytest.approx(21 / 23)                            # clutter kept in OA
    assert format_row(s, sep=" ").split(" ")[2] == "-/-"
    cm[4, 0] = 3                                                        # car in truth, never predicted: counts as 0
    assert segmentation_scores(cm, dataset="vaihingen")["f1"][4] == 0.0
    assert np.isnan(segmentation_scores(np.zeros((3, 3)))["miou"])


def test_loveda_and_format():
    rng = np.random.default_rng(3)
    cm = rng.integers(0, 30, (7, 7)) + np.diag(rng.integers(100, 300, 7))
    s = segmentation_scores(cm, dataset="loveda")
    f1 = [2 * cm[c, c] / (cm[c].sum() + cm[:, c].sum()) for c in range(7)]
    assert s["mf1"] == pytest.approx(np.mean(f1)) and len(s["eval_classes"]) == 7
    row = format_row(s, "x", sep=" ").split(" ")
    assert row[0] == "x" and len(row) == 1 + 7 + 2 and row[-2] == f"{100 * np.mean(f1):.2f}"
    assert format_header(s, sep="|").split("|")[1] == "background"
    paper = {"class_names": list("abcde"), "eval_classes": [0, 1, 2, 3, 4],
             "f1": [.9233, .9625, .8047, .9085, .8935], "iou": [.8576, .9278, .6733, .8322, .8075], "mf1": .8985, "miou": .8197}
    assert format_row(paper, sep=" ") == "92.33/85.76 96.25/92.78 80.47/67.33 90.85/83.22 89.35/80.75 89.85 81.97"


def test_real_loveda_masks(realdata):
    from ssrs_nb.core import imread
    masks = sorted((realdata / "loveda/Train/Rural/masks_png").glob("*.png"))
    assert masks
    acc, ref = np.zeros((7, 7), np.int64), np.zeros((7, 7), np.int64)
    for m in masks:
        lab = imread(m).astype(np.int64); lab = np.where(lab == 0, 255, lab - 1)
        pred = np.roll(np.where(lab == 255, 0, lab), 5, axis=1)
        acc += confusion_matrix(pred, lab, 7)
        k = lab != 255; np.add.at(ref, (lab[k], pred[k]), 1)
    np.testing.assert_array_equal(acc, ref)
