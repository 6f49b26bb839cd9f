"Tests of ssrs_nb.sam: SGO/SGB from masks, the SAM wrapper (tiny random SAM), superpixels, tiling, datasets."
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssrs_nb.core import imread, imwrite_png
from ssrs_nb.sam import (SAM_CHECKPOINTS, SuperpixelGenerator, build_mask_generator, build_tiny_sam, crop_starts,
                         generate_dataset, generate_sgo_sgb, mask_generator_from_model, masks_to_sgo_sgb,
                         read_sgo_sgb, sgo_sgb_paths)
from reference import official_sgo_sgb as naive


def rect(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool); m[y0:y1, x0:x1] = True
    return dict(segmentation=m, area=int(m.sum()))


def discs(n, H=48, W=64, seed=0):
    rng = np.random.default_rng(seed); yy, xx = np.mgrid[:H, :W]; out = []
    for _ in range(n):
        m = (yy - rng.uniform(0, H)) ** 2 + (xx - rng.uniform(0, W)) ** 2 < rng.uniform(2, 20) ** 2
        out.append(dict(segmentation=m, area=int(m.sum())))
    return out


# ---------------------------------------------------------------- masks_to_sgo_sgb
def test_hand_example_ordering_overwrite_and_boundaries():
    # 14×14: big square ids 1, a smaller overlapping square 2 (overwrites), a tiny mask under S (no id, but outlined)
    big, small, tiny = rect((14, 14), 0, 10, 0, 10), rect((14, 14), 5, 13, 5, 13), rect((14, 14), 12, 14, 0, 2)
    sgo, sgb = masks_to_sgo_sgb([small, tiny, big], max_objects=50, min_area=10)
    assert sgo.dtype == np.uint16 and sgb.dtype == np.uint8
    assert sgo[2, 2] == 1 and sgo[8, 8] == 2 and sgo[11, 11] == 2      # the smaller one wins the overlap
    assert sgo[12, 1] == 0 and sgb[12, 1] == 255                       # tiny: no id, but on the SGB
    # thick boundary of big along row 9/10: both sides of its lower edge (cols 1-4 are away from other masks)
    assert (sgb[9, 1:4] == 255).all() and (sgb[10, 1:4] == 255).all() and (sgb[8, 1:4] == 0).all()
    assert sgb[0, 5] == 0                                              # the image border is not a boundary
    assert (sgo[sgb == 255] == 0).all()
    assert set(np.unique(sgb)) == {0, 255}


@pytest.mark.parametrize("K,S", [(50, 50), (3, 0), (500, 200), (1, 1), (0, 0)])
def test_matches_official_loop(K, S):
    ms = discs(150)
    sgo, sgb = masks_to_sgo_sgb(ms, K, S)
    e_sgo, e_sgb = naive(ms, K, S)
    np.testing.assert_array_equal(sgo, e_sgo); np.testing.assert_array_equal(sgb, e_sgb)
    assert sgo.max() <= K


def test_ties_keep_input_order():
    a, b = rect((10, 10), 0, 4, 0, 10), rect((10, 10), 2, 6, 0, 10)   # equal areas (40): the input order decides
    assert masks_to_sgo_sgb([a, b], max_objects=1, min_area=0)[0][0, 5] == 1   # a kept: row 0 is a's interior
    assert masks_to_sgo_sgb([b, a], max_objects=1, min_area=0)[0][0, 5] == 0   # b kept: row 0 uncovered
    two = masks_to_sgo_sgb([a, b], min_area=0)[0]
    assert two[0, 5] == 1 and two[8, 5] == 0 and (two[1:7] == 0).all()          # rows 1-6 are boundaries


def test_more_than_255_objects_and_array_input():
    ms = discs(600, 64, 64, seed=3)
    sgo, _ = masks_to_sgo_sgb(ms, max_objects=600, min_area=0)
    assert sgo.dtype == np.uint16 and sgo.max() > 255
    arr = np.stack([m["segmentation"] for m in ms])
    np.testing.assert_array_equal(masks_to_sgo_sgb(arr, 600, 0)[0], sgo)


def test_empty_and_bad_inputs():
    sgo, sgb = masks_to_sgo_sgb([], shape=(5, 7))
    assert sgo.shape == (5, 7) and not sgo.any() and not sgb.any() and sgo.dtype == np.uint16
    with pytest.raises(ValueError, match="shape="): masks_to_sgo_sgb([])
    with pytest.raises(ValueError, match="different shapes"):
        masks_to_sgo_sgb([rect((4, 4), 0, 2, 0, 2), rect((4, 5), 0, 2, 0, 2)])
    with pytest.raises(ValueError, match="binary_mask"):
        masks_to_sgo_sgb([dict(segmentation={"size": [4, 4], "counts": "abc"}, area=3)])


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


# ---------------------------------------------------------------- superpixels and tiling
def test_superpixel_generator_partition():
    img = np.zeros((30, 40, 3), np.uint8); img[:, 20:] = 255; img[5:15, 5:10] = (0, 0, 255)
    ms = SuperpixelGenerator(scale=100, sigma=0, min_size=10).generate(img)
    areas = sorted(m["area"] for m in ms)
    assert areas == [50, 30 * 20 - 50, 30 * 20]
    cover = np.sum([m["segmentation"] for m in ms], 0)
    assert (cover == 1).all()
    for m in ms: assert m["area"] == m["segmentation"].sum()


def test_crop_starts_cover():
    for L, c, o in [(2000, 512, 64), (2566, 512, 64), (512, 512, 64), (513, 512, 0), (100, 512, 64)]:
        s = crop_starts(L, c, o)
        cov = np.zeros(L, int)
        for a in s: cov[a:a + c] += 1
        assert (cov[:L] >= 1).all() and s[-1] + min(c, L) == L
        assert all(b - a <= c - o for a, b in zip(s, s[1:]))


def test_tiling_equals_whole_image_partition():
    H, W = 150, 230
    yy, xx = np.mgrid[:H, :W]
    glab = (yy // 33) * 100 + (xx // 41)

    class Blocks:   # objects = blocks of a global map, seen through the crop (position encoded in the pixels)
        def generate(self, win):
            y, x = int(win[0, 0, 0]) * 2, int(win[0, 0, 1]) * 2
            lab = glab[y:y + win.shape[0], x:x + win.shape[1]]
            return [dict(segmentation=lab == v, area=int((lab == v).sum())) for v in np.unique(lab)]

    enc = np.stack([yy // 2, xx // 2, np.zeros_like(yy)], -1).astype(np.uint8)
    assert all(s % 2 == 0 for s in crop_starts(H, 64, 16) + crop_starts(W, 64, 16))
    whole = masks_to_sgo_sgb(Blocks().generate(enc), 10_000, 0)
    tiled = generate_sgo_sgb(enc, Blocks(), crop=64, overlap=16, max_objects=10_000, min_area=0)
    np.testing.assert_array_equal(tiled[1], whole[1])
    n = len(np.unique(glab))
    assert tiled[0].max() == n and np.unique(np.stack([tiled[0].ravel(), whole[0].ravel()]), axis=1).shape[1] == n + 1


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
