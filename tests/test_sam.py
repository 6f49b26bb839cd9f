"Tests of ssrs_nb.sam: SGO/SGB from masks, the SAM wrapper (tiny random SAM), superpixels, tiling, datasets."
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssrs_nb.core import imread, imwrite_png
from ssrs_nb.sam import (SAM_CHECKPOINTS, SuperpixelGenerator, build_mask_generator, build_tiny_sam,
                         generate_dataset, generate_sgo_sgb, mask_generator_from_model, masks_to_sgo_sgb,
                         read_sgo_sgb, sgo_sgb_paths)
from ssrs_nb.reference import official_sgo_sgb as naive


# ---------------------------------------------------------------- SAM wrapper and tiny SAM
@pytest.fixture(scope="module")
def tiny_generator():
    "The real SamAutomaticMaskGenerator on a tiny random SAM; random weights → keep every mask (3 per point)."
    return mask_generator_from_model(build_tiny_sam(), points_per_side=4, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0, box_nms_thresh=1.0)


def test_tiny_sam_end_to_end_real_generator_path(tiny_generator):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (8, 8, 3)).repeat(12, 0).repeat(12, 1).astype(np.uint8)
    gen = tiny_generator
    masks = gen.generate(img)
    assert len(masks) == 48 and masks[0]["segmentation"].shape == (96, 96)
    sgo, sgb = masks_to_sgo_sgb(masks, min_area=1)
    e_sgo, e_sgb = naive(masks, min_area=1)
    np.testing.assert_array_equal(sgo, e_sgo); np.testing.assert_array_equal(sgb, e_sgb)
    assert gen.ssrs_settings["generator"] == "sam" and gen.ssrs_settings["box_nms_thresh"] == 1.0
    # the paper's thresholds are the defaults (and random weights then give no mask: all-zero maps, no crash)
    strict = mask_generator_from_model(gen.predictor.model, points_per_side=4)
    assert (strict.pred_iou_thresh, strict.box_nms_thresh, strict.crop_nms_thresh) == (0.96, 0.5, 0.5)
    sgo, sgb = generate_sgo_sgb(img, strict, crop=None)
    assert sgo.shape == (96, 96) and not sgo.any() and not sgb.any()


def test_tiny_sam_tiled_ids_unique(tiny_generator):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (10, 10, 3)).repeat(16, 0).repeat(16, 1).astype(np.uint8)   # 160×160
    sgo, sgb = generate_sgo_sgb(img, tiny_generator, crop=96, overlap=32, min_area=1, merge_seams=False)
    assert sgo.shape == (160, 160) and sgo.dtype == np.uint16
    assert (sgo[sgb > 0] == 0).all()
    ids = np.unique(sgo); ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))   # renumbered 1…n
    # each id lives in exactly one crop core (cores split at the overlap middles: 0-80 | 80-160 on each axis)
    core = (np.arange(160)[:, None] >= 80) * 2 + (np.arange(160)[None, :] >= 80)
    pairs = np.unique(np.stack([sgo[sgo > 0], core[sgo > 0]]), axis=1)
    assert pairs.shape[1] == len(ids)
    assert len(np.unique(pairs[1])) == 4   # every crop contributed objects (a repeated-id merge would fail above)


def test_build_mask_generator_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e: build_mask_generator(tmp_path / "missing.pth")
    for name in SAM_CHECKPOINTS.values(): assert name in str(e.value)
    assert "missing.pth" in str(e.value)
    fake = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}, fake)
    with pytest.raises(ValueError, match="model_type='vit_l'"): build_mask_generator(fake, "vit_h")
    with pytest.raises(ValueError, match="does not fit SAM vit_l"): build_mask_generator(fake, "auto")   # 1 tensor only
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(50, 3, 16, 16)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="width 50"): build_mask_generator(tmp_path / "w.pth")
    torch.save([1, 2], tmp_path / "l.pth")
    with pytest.raises(ValueError, match="not a SAM state dict"): build_mask_generator(tmp_path / "l.pth")
    with pytest.raises(ValueError, match="unknown SamAutomaticMaskGenerator"):
        build_mask_generator(fake, "vit_l", pred_iou=0.9)


# ---------------------------------------------------------------- datasets
def make_images(d, n=4, size=(48, 64)):
    rng = np.random.default_rng(0); out = []
    for k in range(n):
        p = Path(d) / "img" / f"tile{k}.png"
        imwrite_png(p, rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8))
        out.append(p)
    return out


class Failing:
    "Superpixels, but raises on the n-th call (a run killed in the middle)."
    def __init__(self, n): self.inner, self.n, self.calls = SuperpixelGenerator(scale=50), n, 0
    ssrs_settings = SuperpixelGenerator(scale=50).ssrs_settings
    def generate(self, img):
        self.calls += 1
        if self.calls == self.n: raise KeyboardInterrupt("killed")
        return self.inner.generate(img)


def test_generate_dataset_resume_atomic_manifest(tmp_path):
    ims = make_images(tmp_path); out = tmp_path / "maps"
    with pytest.raises(KeyboardInterrupt): generate_dataset(ims, out, Failing(3), crop=None, min_area=0, progress=False)
    done = sorted(p.name for p in out.glob("*_sgo.png"))
    assert done == ["tile0_sgo.png", "tile1_sgo.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]    # no temporary file left behind
    spg = SuperpixelGenerator(scale=50)
    m = generate_dataset(ims, out, spg, crop=None, min_area=0, progress=False)
    assert (m["generated"], m["skipped"], m["total"]) == (2, 2, 4)
    man = json.loads((out / "manifest.json").read_text())
    assert man["settings"]["generator"]["generator"] == "superpixel" and man["settings"]["min_area"] == 0
    for k, p in enumerate(ims):
        sgo, sgb = read_sgo_sgb(out, f"tile{k}", shape=(48, 64))
        e_sgo, e_sgb = naive(spg.generate(imread(p)), min_area=0)
        np.testing.assert_array_equal(sgo, e_sgo); np.testing.assert_array_equal(sgb, e_sgb)
        assert man["images"][f"tile{k}"]["objects"] == e_sgo.max()
    assert cv2_depth(sgo_sgb_paths(out, "tile0")[0]) == 16


def cv2_depth(path):
    import cv2
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}[cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype]


def test_generate_dataset_shards_and_errors(tmp_path):
    ims = make_images(tmp_path, n=5); spg = SuperpixelGenerator(scale=50)
    got = [set(generate_dataset(list(reversed(ims)) if s else ims, tmp_path / "sh", spg, crop=None, shard=s,
                                num_shards=3, progress=False)["images"]) for s in range(3)]
    assert sum(map(len, got)) == 5 and set.union(*got) == {f"tile{k}" for k in range(5)}
    assert "tile1" in got[1] and len(list((tmp_path / "sh").glob("manifest_*-of-3.json"))) == 3   # stems sorted
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(ims, tmp_path / "sh", SuperpixelGenerator(scale=51), crop=None, progress=False)
    imwrite_png(tmp_path / "sh" / "tile1_sgb.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="tile1_sgb.png"):
        generate_dataset(ims, tmp_path / "sh", spg, crop=None, shard=1, num_shards=3, progress=False)
    bad = tmp_path / "img" / "broken.png"; bad.write_bytes(b"\x89PNG junk")
    with pytest.raises(ValueError, match="broken.png"): generate_dataset([bad], tmp_path / "b", spg, progress=False)
    rgba = tmp_path / "img" / "gray.png"; imwrite_png(rgba, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="gray.png.*3-channel"): generate_dataset([rgba], tmp_path / "g", spg, progress=False)
    with pytest.raises(ValueError, match="share the stem"):
        generate_dataset([ims[0], tmp_path / "other" / "tile0.png"], tmp_path / "d", spg, progress=False)
    with pytest.raises(FileNotFoundError, match="tile1_sgo.png"): read_sgo_sgb(tmp_path / "nowhere", "tile1")


# ---------------------------------------------------------------- real pixels
def test_superpixels_on_real_crops(realdata):
    vai = imread(realdata / "vaihingen/top/top_mosaic_09cm_area1.tif")
    assert vai.shape == (512, 512, 3) and vai.dtype == np.uint8
    sgo, sgb = generate_sgo_sgb(vai, SuperpixelGenerator(), crop=256, overlap=64)
    raw, _ = generate_sgo_sgb(vai, SuperpixelGenerator(), crop=256, overlap=64, merge_seams=False)
    assert sgo.shape == (512, 512) and 50 < sgo.max() < raw.max() <= 9 * 50   # seams merged some objects
    assert (sgo[sgb > 0] == 0).all() and 0.05 < (sgb > 0).mean() < 0.6
    lov = imread(realdata / "loveda/Train/Rural/images_png/0.png")[:384, :384]
    sgo, sgb = masks_to_sgo_sgb(SuperpixelGenerator().generate(lov))
    assert sgo.max() == 50 and (sgb > 0).any()
