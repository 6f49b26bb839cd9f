("Tests of ssrs_nb.sam that a notebook cannot hold well: a generation killed mid-run and resumed, shards, corrupt files "
 "(the rest: nbs/01_sam).")
import json
from pathlib import Path

import numpy as np
import pytest

from ssrs_nb.core import imread, imwrite_png
from ssrs_nb.maps import generate_dataset, read_sgo_sgb, sgo_sgb_paths
from ssrs_nb.reference import official_sgo_sgb as naive
from ssrs_nb.sam import SuperpixelGenerator


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
