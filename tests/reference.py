"""Independent reference forms shared by the tests and the benchmarks (written as the official code does it:
plain loops, no vectorisation), so a test and a benchmark compare against the same oracle."""
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

from ssrs_nb.core import imwrite_png
from ssrs_nb.data import read_label


def official_sgo_sgb(masks, max_objects=50, min_area=50):
    "The official per-mask algorithm (sorted assignment loop + find_boundaries per mask) → (sgo int64, sgb 0/255)."
    H, W = masks[0]["segmentation"].shape
    sgo = np.zeros((H, W), np.int64); bnd = np.zeros((H, W), bool); idx = 1
    for ann in sorted(masks, key=lambda m: m["area"], reverse=True):
        if ann["area"] < min_area: continue
        if idx == max_objects + 1: break
        sgo[ann["segmentation"]] = idx; idx += 1
    for ann in masks: bnd |= find_boundaries(ann["segmentation"], mode="thick")
    sgo[bnd] = 0
    return sgo, np.where(bnd, 255, 0)


def gt_sgo_sgb_maps(tiles, out_dir):
    "Hand-made SGO/SGB files: connected components of the ground truth numbered by decreasing area, boundaries 255."
    for t in tiles:
        lab = read_label(t.label_path, t.dataset)
        cc = np.zeros(lab.shape, np.int64)
        for k in np.unique(lab):
            _, ck = cv2.connectedComponents((lab == k).astype(np.uint8), connectivity=4)
            cc[ck > 0] = ck[ck > 0] + cc.max()
        areas = np.bincount(cc.ravel())
        order = np.argsort(-areas, kind="stable")
        rank = np.empty(len(areas), np.int64); rank[order] = np.arange(1, len(areas) + 1)
        sgo = rank[cc].astype(np.uint16)
        sgb = (cv2.dilate(sgo, np.ones((3, 3), np.uint8)) != sgo).astype(np.uint8) * 255
        imwrite_png(Path(out_dir) / f"{t.stem}_sgo.png", sgo); imwrite_png(Path(out_dir) / f"{t.stem}_sgb.png", sgb)
