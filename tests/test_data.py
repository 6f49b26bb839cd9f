"""Tests of ssrs_nb.data / ssrs_nb.synthetic: generated data, and the window sampler in DataLoader worker processes
(the rest: nbs/02_data)."""
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ssrs_nb.core import imread
from ssrs_nb.data import WindowDataset, list_tiles, load_tile, read_image
from ssrs_nb.reference import VAIHINGEN_COLOURS as VAI_COLOURS
from ssrs_nb.reference import decode_vaihingen_naive as naive_vaihingen
from ssrs_nb.reference import gt_sgo_sgb_maps as gt_maps
from ssrs_nb.synthetic import make_synthetic_loveda, make_synthetic_vaihingen


@pytest.fixture(scope="module")
def vai(tmp_path_factory):
    root = tmp_path_factory.mktemp("vai")
    ids = make_synthetic_vaihingen(root, n_tiles=4, size=192, seed=7)
    return root, ids


@pytest.fixture(scope="module")
def vai_maps(vai, tmp_path_factory):
    root, ids = vai
    tiles = list_tiles("vaihingen", root, "train", ids=ids["train"])
    out = tmp_path_factory.mktemp("sgo")
    gt_maps(tiles, out)
    return tiles, out


# ---------------------------------------------------------------- generated data
def test_synthetic_split_ids(tmp_path):
    assert make_synthetic_vaihingen(tmp_path / "a", n_tiles=2, size=64) == {"train": [1], "test": [5]}
    assert make_synthetic_vaihingen(tmp_path / "b", n_tiles=8, size=32) == {"train": [1, 3, 23, 26, 7, 11], "test": [5, 21]}
    assert make_synthetic_vaihingen(tmp_path / "c", ids=[30, 7], size=32) == {"train": [7], "test": [30]}
    with pytest.raises(ValueError, match="n_tiles=1"): make_synthetic_vaihingen(tmp_path / "d", n_tiles=1)
    with pytest.raises(ValueError, match="n_tiles=17"): make_synthetic_vaihingen(tmp_path / "d", n_tiles=17)
    assert make_synthetic_loveda(tmp_path / "e", n_tiles=4, size=64) == {"train": [1366, 1367, 1368], "test": [3514]}


def test_synthetic_vaihingen_files(vai):
    root, ids = vai
    assert ids == {"train": [1, 3, 23], "test": [5]}
    for i in ids["train"] + ids["test"]:
        img = imread(root / "top" / f"top_mosaic_09cm_area{i}.tif")
        full = imread(root / "gts_for_participants" / f"top_mosaic_09cm_area{i}.tif")
        ero = imread(root / "gts_eroded_for_participants" / f"top_mosaic_09cm_area{i}_noBoundary.tif")
        assert img.shape == full.shape == ero.shape == (192, 192, 3) and img.dtype == np.uint8
        full_cols = {tuple(c) for c in np.unique(full.reshape(-1, 3), axis=0).tolist()}
        ero_cols = {tuple(c) for c in np.unique(ero.reshape(-1, 3), axis=0).tolist()}
        assert full_cols <= set(VAI_COLOURS) - {(0, 0, 0)} and (0, 0, 0) in ero_cols
        # eroded = full where defined; undefined exactly where a different class lies within 3 px (naive loop)
        f = naive_vaihingen(full); e = naive_vaihingen(ero)
        expect = f.copy()
        pad = np.pad(f, 3, mode="edge")
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                if dy * dy + dx * dx <= 9: expect[pad[3 + dy:195 + dy, 3 + dx:195 + dx] != f] = 255
        np.testing.assert_array_equal(e, expect)
        # vegetation is red in NIR-R-G: NIR above red on low vegetation and trees
        veg = np.isin(f, [2, 3])
        assert img[..., 0][veg].mean() > img[..., 1][veg].mean() + 40


def test_synthetic_content_and_hardness(vai):
    root, ids = vai
    tiles = list_tiles("vaihingen", root, "train", ids=ids["train"], eroded=False)
    imgs, labs = zip(*[load_tile(t) for t in tiles])
    lab = np.concatenate([l.ravel() for l in labs]); img = np.concatenate([i.reshape(-1, 3) for i in imgs]).astype(float)
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4, 5}                      # every class appears
    # a per-pixel nearest-class-mean colour classifier, fitted on the same pixels, is far from perfect
    means = np.stack([img[lab == k].mean(0) for k in range(6)])
    pred = ((img[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert 0.3 < (pred == lab).mean() < 0.9


def test_synthetic_deterministic_and_fast(tmp_path, vai):
    root, _ = vai
    make_synthetic_vaihingen(tmp_path / "x", ids=[3], size=192, seed=7)           # alone, not among 4 tiles
    a = (tmp_path / "x/top/top_mosaic_09cm_area3.tif").read_bytes()
    assert a == (root / "top/top_mosaic_09cm_area3.tif").read_bytes()
    make_synthetic_vaihingen(tmp_path / "y", ids=[3], size=192, seed=8)
    assert a != (tmp_path / "y/top/top_mosaic_09cm_area3.tif").read_bytes()
    t0 = time.process_time(); make_synthetic_vaihingen(tmp_path / "z", ids=[1], size=512); dt = time.process_time() - t0
    assert dt < 1.0, f"a 512×512 tile took {dt:.2f} s of CPU"


def test_synthetic_loveda(tmp_path):
    ids = make_synthetic_loveda(tmp_path, n_tiles=8, size=128, seed=3, nodata_prob=0.5)
    assert ids == {"train": [1366, 1367, 1368, 1369, 1370, 1371], "test": [3514, 3515]}
    tr = list_tiles("loveda", tmp_path, "train", ids=ids["train"]); te = list_tiles("loveda", tmp_path, "test", ids=ids["test"])
    assert all("Train/Urban" in str(t.image_path) for t in tr) and all("Val/Urban" in str(t.image_path) for t in te)
    seen, nodata = set(), 0
    for t in tr + te:
        raw = imread(t.label_path); img = read_image(t.image_path)
        assert raw.dtype == np.uint8 and raw.ndim == 2 and raw.max() <= 7 and img.shape == (128, 128, 3)
        seen |= set(np.unique(raw).tolist()); nodata += (raw == 0).any()
        assert (img[raw == 0] == 0).all()                                   # no-data pixels are black
    assert {1, 2, 3, 6, 7} <= seen and nodata >= 1


# ---------------------------------------------------------------- sampler


def test_window_determinism_and_workers(vai_maps):
    tiles, sgo_dir = vai_maps
    mk = lambda: WindowDataset(tiles, sgo_dir=sgo_dir, window=32, length=24, seed=4, progress=False)
    a, b = mk(), mk()
    fwd = [a[i]["sgo"] for i in range(24)]
    bwd = [b[i]["sgo"] for i in reversed(range(24))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(fwd, bwd))
    a.set_epoch(3); e3 = [a[i]["label"] for i in range(24)]
    assert not all(torch.equal(a[i]["label"], mk()[i]["label"]) for i in range(24))
    # two workers, persistent: set_epoch before iter() reaches them; any batch can be recomputed alone
    c = mk()
    dl = DataLoader(c, batch_size=6, num_workers=2, persistent_workers=True)
    ep0 = torch.cat([x["label"] for x in dl])
    c.set_epoch(3)
    ep3 = torch.cat([x["label"] for x in dl])
    assert torch.equal(ep3, torch.stack(e3)) and torch.equal(ep0[7], mk()[7]["label"])
    assert torch.equal(torch.stack(list(next(iter(DataLoader(c, batch_size=6, sampler=range(12, 18))))["label"])),
                       torch.stack(e3[12:18]))
    assert WindowDataset(tiles, window=32, length=4, seed=5, progress=False)[0]["label"].shape == (32, 32)


# ---------------------------------------------------------------- ssrs-check-dataset
def _check_cli(*args):
    "`ssrs-check-dataset` as installed, else the same entry point through this interpreter."
    import os
    import subprocess
    import sys
    from pathlib import Path
    exe = Path(sys.executable).parent / "ssrs-check-dataset"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-c", "import sys; from ssrs_nb.specs import "
                                            "check_dataset_main; sys.exit(check_dataset_main())"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_check_dataset_cli(tmp_path):
    import json

    rasterio = pytest.importorskip("rasterio")
    from ssrs_nb.core import imwrite_png
    from ssrs_nb.specs import make_example_dataset, write_geotiff
    spec = make_example_dataset(tmp_path, n_train=2, n_test=1, size=64, seed=3)
    lab0 = rasterio.open(tmp_path / "labels/train/scene_train0_lbl.tif").read(1)
    write_geotiff(tmp_path / "scenes/train/scene_train2.tif", np.zeros((64, 64, 4), np.uint16))
    write_geotiff(tmp_path / "labels/train/scene_train2_lbl.tif", lab0, crs="EPSG:4326")       # CRS disagrees
    rng = np.random.default_rng(0)
    for stem in ("scene_train0", "scene_train1", "scene_train2"):                              # random objects / boundaries
        imwrite_png(tmp_path / f"maps/{stem}_sgo.png", rng.integers(0, 3, (64, 64)).astype(np.uint16))
        imwrite_png(tmp_path / f"maps/{stem}_sgb.png", (rng.random((64, 64)) < 0.1).astype(np.uint8) * 255)
    r = _check_cli(spec, "--sgo-root", tmp_path / "maps", "--json", tmp_path / "rep.json")
    assert r.returncode == 1, r.stderr                                                          # problems listed
    rep = json.loads((tmp_path / "rep.json").read_text())
    for split in ("train", "test"):                                                             # independently: NumPy
        files = sorted((tmp_path / "labels" / split).glob("*_lbl.tif"))
        h = np.histogram(np.concatenate([rasterio.open(f).read(1).ravel() for f in files]), bins=np.arange(257))[0]
        got = rep["splits"][split]
        assert got["scenes"] == [f.name[:-8] for f in files]
        assert got["histogram"] == dict(zip(["road", "building", "tree", "water"], h[:4].tolist()))
        assert (got["ignored"], got["pixels"]) == (h[255], h.sum()) and got["ignored_fraction"] == h[255] / h.sum()
        assert f"{h[0]:,} ({100 * h[0] / h.sum():.1f} %)" in r.stdout
    sgo = np.stack([imread(tmp_path / f"maps/scene_train{k}_sgo.png") for k in range(3)])
    sgb = np.stack([imread(tmp_path / f"maps/scene_train{k}_sgb.png") for k in range(3)])
    tr = rep["splits"]["train"]
    assert tr["sgo_coverage"] == (sgo > 0).mean() and tr["sgb_fraction"] == (sgb > 0).mean() and tr["scenes_with_maps"] == 3
    assert rep["splits"]["test"]["scenes_with_maps"] == 0
    probs = {(p["scene"], p["problem"].split(": ", 1)[1].split(";")[0]) for p in rep["problems"]}
    assert probs == {("scene_train2", "label CRS EPSG:4326 differs from EPSG:32632 of its image"),
                     ("scene_test0", "map not found")}, probs
    assert "problems: 2" in r.stdout and "SGO coverage" in r.stdout
    assert _check_cli(spec, "--split", "test").returncode == 0
    bad = _check_cli(tmp_path / "nope.yaml")
    assert bad.returncode == 2 and "nope.yaml: dataset spec file not found" in bad.stderr
    bad = _check_cli("vaihingen")
    assert bad.returncode == 2 and "pass root= (--root DIR)" in bad.stderr


def test_potsdam_real_crop(realdata, tmp_path):
    "The real Potsdam 2_10 crop (an RGB PNG and an index PNG) written into the official layout and read by the preset."
    import tifffile

    from ssrs_nb.core import get_preset
    rgb = imread(realdata / "potsdam/top_potsdam_2_10_RGB_crop512.png")
    idx = imread(realdata / "potsdam/top_potsdam_2_10_label_index_crop512.png")            # 0 eroded, 1…6 classes
    colours = np.array(((0, 0, 0),) + get_preset("potsdam").palette, np.uint8)
    (tmp_path / "2_Ortho_RGB").mkdir(); (tmp_path / "5_Labels_all_noBoundary").mkdir()
    tifffile.imwrite(tmp_path / "2_Ortho_RGB/top_potsdam_2_10_RGB.tif", rgb)
    tifffile.imwrite(tmp_path / "5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif", colours[idx])
    (t,) = list_tiles("potsdam", tmp_path, "test", ids=["2_10"])
    img, lab = load_tile(t)
    np.testing.assert_array_equal(img, rgb)
    want = np.full(idx.shape, 255, np.uint8)
    for k in range(1, 7): want[idx == k] = k - 1                                              # per-class masks
    np.testing.assert_array_equal(lab, want)
    assert (lab == 255).sum() == (idx == 0).sum() > 0 and (lab == 1).mean() > 0.1             # black ignored; buildings
