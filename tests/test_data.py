"Tests of ssrs_nb.data: readers, official layouts, generated data, the window sampler and the test iterator."
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ssrs_nb.core import imread, imwrite_png, atomic_write_bytes
from ssrs_nb.data import Tile, WindowDataset, iter_test_tiles, list_tiles, load_tile, read_image, read_label
from ssrs_nb.reference import VAIHINGEN_COLOURS as VAI_COLOURS, decode_vaihingen_naive as naive_vaihingen
from ssrs_nb.reference import gt_sgo_sgb_maps as gt_maps, renumber_sgo_naive as naive_renumber
from ssrs_nb.synthetic import make_synthetic_loveda, make_synthetic_vaihingen


def write_tif(path, rgb):
    "Independent TIFF writer for hand-made files (RGB in, BGR on disk as OpenCV expects)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]))


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


# ---------------------------------------------------------------- readers
def test_vaihingen_colour_table(tmp_path):
    rng = np.random.default_rng(0)
    cols = np.array(list(VAI_COLOURS), np.uint8)
    rgb = cols[rng.integers(0, len(cols), (9, 11))]
    write_tif(tmp_path / "l.tif", rgb)
    lab = read_label(tmp_path / "l.tif", "vaihingen")
    assert lab.dtype == np.uint8 and lab.shape == (9, 11)
    np.testing.assert_array_equal(lab, naive_vaihingen(rgb))


def test_vaihingen_unknown_colour_is_an_error(tmp_path):
    rgb = np.full((4, 4, 3), 255, np.uint8); rgb[0, :3] = (255, 0, 255); rgb[3, 3] = (1, 2, 3)
    write_tif(tmp_path / "odd.tif", rgb)
    with pytest.raises(ValueError) as e: read_label(tmp_path / "odd.tif", "vaihingen")
    msg = str(e.value)
    assert "odd.tif" in msg and "(255, 0, 255) on 3 px" in msg and "(1, 2, 3) on 1 px" in msg
    write_tif(tmp_path / "gray.tif", np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "g1.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="expected an H×W×3 RGB"): read_label(tmp_path / "g1.png", "vaihingen")


def test_loveda_mask(tmp_path):
    raw = np.arange(8, dtype=np.uint8).reshape(2, 4)
    cv2.imwrite(str(tmp_path / "m.png"), raw)
    np.testing.assert_array_equal(read_label(tmp_path / "m.png", "loveda"), [[255, 0, 1, 2], [3, 4, 5, 6]])
    cv2.imwrite(str(tmp_path / "bad.png"), np.array([[8, 8, 200]], np.uint8))
    with pytest.raises(ValueError, match=r"bad.png: LoveDA mask values \{8: 2, 200: 1\}"):
        read_label(tmp_path / "bad.png", "loveda")
    cv2.imwrite(str(tmp_path / "m16.png"), np.ones((3, 3), np.uint16))
    with pytest.raises(ValueError, match="m16.png: LoveDA mask has dtype uint16"): read_label(tmp_path / "m16.png", "loveda")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"): read_label(tmp_path / "rgb.png", "loveda")
    with pytest.raises(ValueError, match="choose one of"): read_label(tmp_path / "m.png", "potsdam")


def test_read_image_checks(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"g.png: image has 1 channel\(s\)"): read_image(tmp_path / "g.png")
    cv2.imwrite(str(tmp_path / "d.png"), np.zeros((5, 6, 3), np.uint16))
    with pytest.raises(ValueError, match="d.png: image has dtype uint16"): read_image(tmp_path / "d.png")
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    write_tif(tmp_path / "c.tif", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), rgb)   # channel order kept (NIR-R-G stays)
    with pytest.raises(FileNotFoundError, match="nope.tif"): read_image(tmp_path / "nope.tif")


# ---------------------------------------------------------------- layouts
def test_vaihingen_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as e: list_tiles("vaihingen", tmp_path / "absent", "train")
    assert "absent" in str(e.value) and "top/top_mosaic_09cm_area{N}.tif" in str(e.value)
    white = np.full((6, 7, 3), 255, np.uint8)
    write_tif(tmp_path / "top/top_mosaic_09cm_area1.tif", white)
    write_tif(tmp_path / "top/top_mosaic_09cm_area3.tif", white)
    write_tif(tmp_path / "top/top_mosaic_09cm_area5.tif", white)
    write_tif(tmp_path / "gts_for_participants/top_mosaic_09cm_area1.tif", white)      # zip layout 1
    write_tif(tmp_path / "top_mosaic_09cm_area3.tif", white)                          # zip layout 2 (root)
    write_tif(tmp_path / "gts_eroded_for_participants/top_mosaic_09cm_area5_noBoundary.tif", white[:5])
    write_tif(tmp_path / "top_mosaic_09cm_area5.tif", white)
    tr = list_tiles("vaihingen", tmp_path, "train", ids=[1, 3])
    assert [t.label_path for t in tr] == [tmp_path / "gts_for_participants/top_mosaic_09cm_area1.tif",
                                          tmp_path / "top_mosaic_09cm_area3.tif"]
    assert tr[0] == Tile("vaihingen", 1, tmp_path / "top/top_mosaic_09cm_area1.tif", tr[0].label_path)
    assert tr[0].stem == "top_mosaic_09cm_area1"
    te = list_tiles("vaihingen", tmp_path, "test", ids=[5])                          # eroded by default
    assert te[0].label_path.name == "top_mosaic_09cm_area5_noBoundary.tif"
    assert list_tiles("vaihingen", tmp_path, "test", ids=[5], eroded=False)[0].label_path.name == "top_mosaic_09cm_area5.tif"
    assert list_tiles("vaihingen", tmp_path, "train", ids=[5], eroded=True)[0].label_path.name.endswith("_noBoundary.tif")
    with pytest.raises(ValueError, match=r"label is 5×7 but its image .*area5.tif is 6×7"): load_tile(te[0])
    with pytest.raises(FileNotFoundError) as e: list_tiles("vaihingen", tmp_path, "train")   # the paper's 12 ids
    msg = str(e.value)
    assert "top_mosaic_09cm_area23.tif" in msg and "Expected layout" in msg and "area1.tif" not in msg.split("missing")[1][:200]
    with pytest.raises(ValueError, match="split='val'"): list_tiles("vaihingen", tmp_path, "val")


def test_loveda_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Train/Urban/images_png/\{id\}.png"):
        list_tiles("loveda", tmp_path / "none", "train")
    img = np.zeros((8, 8, 3), np.uint8); m = np.ones((8, 8), np.uint8)
    for part, i in (("Train", 1366), ("Val", 3514)):
        imwrite_png(tmp_path / part / "Urban/images_png" / f"{i}.png", img)
        imwrite_png(tmp_path / part / "Urban/masks_png" / f"{i}.png", m)
    (t,) = list_tiles("loveda", tmp_path, "train", ids=[1366])
    assert t.label_path == tmp_path / "Train/Urban/masks_png/1366.png" and t.stem == "1366"
    (t,) = list_tiles("loveda", tmp_path, "test", ids=[3514])
    assert t.image_path == tmp_path / "Val/Urban/images_png/3514.png"
    with pytest.raises(FileNotFoundError, match=r"Val/Urban/images_png/3515.png"):
        list_tiles("loveda", tmp_path, "test", ids=[3514, 3515])
    (tmp_path / "Val/Urban/masks_png/3514.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Val/Urban/masks_png/3514.png"):
        list_tiles("loveda", tmp_path, "test", ids=[3514])
    with pytest.raises(ValueError, match="no eroded ground truth"): list_tiles("loveda", tmp_path, "test", eroded=True)
    with pytest.raises(FileNotFoundError, match="Rural"): list_tiles("loveda", tmp_path, "train", ids=[1366], scene="Rural")


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
def test_window_items(vai_maps):
    tiles, sgo_dir = vai_maps
    ds = WindowDataset(tiles, sgo_dir=sgo_dir, window=64, length=37, augment=False, seed=1, progress=False)
    assert len(ds) == 37
    for i in (0, 5, 36, -1):
        s = ds[i]; p = ds.params(i % 37)
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
        assert s["label"].dtype == torch.int64 and s["sgo"].dtype == torch.int64 and s["sgb"].dtype == torch.uint8
        t = tiles[p["tile"]]; y, x = p["y"], p["x"]
        img = imread(t.image_path)[y:y + 64, x:x + 64]; lab = naive_vaihingen(imread(t.label_path)[y:y + 64, x:x + 64])
        sgo = imread(sgo_dir / f"{t.stem}_sgo.png")[y:y + 64, x:x + 64]
        np.testing.assert_allclose(s["image"].numpy(), img.transpose(2, 0, 1) / 255.0, atol=1e-6)
        np.testing.assert_array_equal(s["label"].numpy(), lab)
        np.testing.assert_array_equal(s["sgo"].numpy(), naive_renumber(sgo))
        np.testing.assert_array_equal(s["sgb"].numpy(), imread(sgo_dir / f"{t.stem}_sgb.png")[y:y + 64, x:x + 64])
    with pytest.raises(IndexError): ds[37]
    # without sgo_dir: image and label only
    assert set(WindowDataset(tiles, window=32, length=2, progress=False)[0]) == {"image", "label"}


def test_window_alignment_marker(vai_maps):
    tiles, sgo_dir = vai_maps
    ds = WindowDataset(tiles[:1], sgo_dir=sgo_dir, window=48, length=160, seed=2, progress=False)
    H, W = ds.labels[0].shape
    ds.images[0][:] = 0; ds.labels[0][:] = 0; ds.sgos[0][:] = 3; ds.sgbs[0][:] = 0
    ds.sgos[0][:, :W // 2] = 1                                         # two background objects ordered left→right
    ys, xs = slice(80, 86), slice(90, 93)                                # a 6×3 marker: not symmetric
    ds.images[0][ys, xs] = (255, 0, 0); ds.labels[0][ys, xs] = 4; ds.sgos[0][ys, xs] = 7; ds.sgbs[0][ys, xs] = 255
    combos = set()
    for i in range(len(ds)):
        p, s = ds.params(i), ds[i]
        ref = np.zeros((H, W), bool); ref[ys, xs] = True
        ref = ref[p["y"]:p["y"] + 48, p["x"]:p["x"] + 48]
        ref = np.rot90(ref, p["k"])
        if p["flip"]: ref = np.flipud(ref)
        if p["mirror"]: ref = np.fliplr(ref)
        np.testing.assert_array_equal(s["image"][0].numpy() == 1.0, ref)
        np.testing.assert_array_equal(s["label"].numpy() == 4, ref)
        np.testing.assert_array_equal(s["sgb"].numpy() == 255, ref)
        sgo = s["sgo"].numpy()
        if ref.any(): np.testing.assert_array_equal(sgo == sgo.max(), ref)   # id 7 is the largest id → n
        assert sgo.min() >= 1 and len(np.unique(sgo)) == sgo.max()
        combos.add((p["k"], p["flip"], p["mirror"]))
    assert len(combos) == 16


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


def test_window_errors(vai_maps, tmp_path):
    tiles, sgo_dir = vai_maps
    with pytest.raises(FileNotFoundError) as e: WindowDataset(tiles, sgo_dir=tmp_path, progress=False)
    assert str(tmp_path / f"{tiles[0].stem}_sgo.png") in str(e.value) and "_sgb.png" in str(e.value)
    for t in tiles:
        imwrite_png(tmp_path / f"{t.stem}_sgo.png", np.zeros((10, 10), np.uint16))
        imwrite_png(tmp_path / f"{t.stem}_sgb.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"_sgo.png: SGO map has shape \(10, 10\), expected \(192, 192\)"):
        WindowDataset(tiles, sgo_dir=tmp_path, window=64, progress=False)
    with pytest.raises(ValueError, match="smaller than window=256"): WindowDataset(tiles, window=256, progress=False)
    with pytest.raises(ValueError, match="tiles=\\[\\]"): WindowDataset([], progress=False)


def test_iter_test_tiles(vai):
    root, ids = vai
    tiles = list_tiles("vaihingen", root, "test", ids=ids["test"])
    out = list(iter_test_tiles(tiles))
    assert len(out) == 1
    img, lab, t = out[0]
    assert t is tiles[0] and img.shape == (192, 192, 3) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, naive_vaihingen(imread(root / "gts_eroded_for_participants/top_mosaic_09cm_area5_noBoundary.tif")))


# ---------------------------------------------------------------- real data
def test_real_vaihingen(realdata):
    root = realdata / "vaihingen"
    (t,) = list_tiles("vaihingen", root, "test", ids=[1])                # eroded label only in the sample
    img, lab = load_tile(t)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    rgb = imread(t.label_path)
    ref = np.full(lab.shape, 99, np.uint8)
    for c, k in VAI_COLOURS.items(): ref[(rgb == c).all(-1)] = k          # per-colour masks, as a reference
    np.testing.assert_array_equal(lab, ref)
    assert (lab == 1).mean() > 0.1 and (lab == 255).any()
    with pytest.raises(FileNotFoundError, match="gts_for_participants"): list_tiles("vaihingen", root, "train", ids=[1])


def test_real_loveda(realdata):
    root = realdata / "loveda"
    tiles = list_tiles("loveda", root, "train", ids=[0, 1, 2], scene="Rural")
    for img, lab, t in iter_test_tiles(tiles):
        raw = imread(t.label_path)
        assert img.shape == (1024, 1024, 3) and lab.shape == (1024, 1024)
        np.testing.assert_array_equal(lab, np.where(raw == 0, 255, raw.astype(int) - 1))
    with pytest.raises(FileNotFoundError, match="Train/Urban"): list_tiles("loveda", root, "train", ids=[0])
    ds = WindowDataset(tiles, window=256, length=8, seed=0, progress=False)
    assert ds[3]["image"].shape == (3, 256, 256)
