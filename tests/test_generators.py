"""Tests of ssrs_nb.generators: HQ-SAM and SAM 2 (random-weight micro models built from each package's own modules)
end to end through maps.generate_dataset (resume, sharding, manifest identity) and through the papermill entry point
nbs/11_generate_sgo.ipynb. Skipped with the reason where an optional extra is not installed."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from ssrs_nb import generators as G
from ssrs_nb.core import imwrite_png
from ssrs_nb.maps import generate_dataset, read_sgo_sgb, sgo_sgb_paths
from ssrs_nb.reference import official_sgo_sgb

ROOT = Path(__file__).resolve().parent.parent
# random weights with every mask kept: the outlines of hundreds of noise masks cover most pixels, which the SGB
# reader rightly flags as a map that looks inverted; expected here, so not shown
pytestmark = pytest.mark.filterwarnings("ignore:.*of the pixels are boundary:UserWarning")
HAVE = {"sam-hq": importlib.util.find_spec("segment_anything_hq") is not None,
        "sam2": importlib.util.find_spec("sam2") is not None}
EXTRA = {"sam-hq": "samhq", "sam2": "sam2"}
# random weights: keep every mask the micro model predicts; 2×2 points keep SAM 2's 1024-px decoder cheap
LOOSE = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def needs(name):
    return pytest.mark.skipif(not HAVE[name], reason=f'{name} not installed: pip install "ssrs-nb[{EXTRA[name]}]"')


PARAMS = [pytest.param("sam-hq", marks=needs("sam-hq")), pytest.param("sam2", marks=needs("sam2"))]
ARCH = {"sam-hq": dict(model_type="micro"), "sam2": dict(config="micro")}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    "Three 96×112 block images (distinct, so a map written for the wrong image would be noticed)."
    d = tmp_path_factory.mktemp("img"); rng = np.random.default_rng(0)
    for k in range(3):
        imwrite_png(d / f"t{k}.png", np.kron(rng.integers(0, 255, (6, 7, 3)), np.ones((16, 16, 1))).astype(np.uint8))
    return sorted(d.glob("*.png"))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    "{name: (checkpoint path, generator)} of the micro models, loaded through build_generator from a file."
    d = tmp_path_factory.mktemp("ck"); out = {}
    for name in ("sam-hq", "sam2"):
        if not HAVE[name]: continue
        ck = G.save_micro_checkpoint(name, d / f"micro_{name}.pt")
        out[name] = (ck, G.build_generator(name, ck, device="cpu", **ARCH[name], **LOOSE))
    return out


def test_names_come_from_the_literal():
    assert G.GENERATORS == typing.get_args(G.GeneratorName) == ("sam", "sam-hq", "sam2", "superpixel", "oracle")
    assert tuple(G.GENERATOR_SPECS) == G.GENERATORS
    with pytest.raises(ValueError, match="'sam-hq'"): G.build_generator("sam3")


@pytest.mark.parametrize("name,module,extra", [("sam-hq", "segment_anything_hq", "samhq"), ("sam2", "sam2", "sam2")])
def test_missing_extra_names_the_extra(monkeypatch, tmp_path, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)          # what `import module` sees where it is not installed
    with pytest.raises(ImportError, match=rf'pip install "ssrs-nb\[{extra}\]"'):
        G.build_generator(name, tmp_path / "x.pt")


def test_extras_declared_and_installed_by_make():
    "settings.ini declares the extras (read into extras_require by setup.py); neither is a core requirement."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini"); cfg = cfg["DEFAULT"]
    assert "segment-anything-hq==0.3" in cfg["extra_samhq"].split()
    assert "sam2==1.1.0" in cfg["extra_sam2"].split()
    req = cfg["requirements"]
    assert "segment-anything-hq" not in req and "sam2" not in req
    mk = (ROOT / "Makefile").read_text()
    assert "samhq,sam2" in mk and "SAM2_BUILD_CUDA=0" in mk


def test_superpixel_through_the_factory_matches_01_sam(images):
    from ssrs_nb.core import imread
    from ssrs_nb.sam import SuperpixelGenerator
    g = G.build_generator("superpixel", scale=50.0, min_size=20)
    img = imread(images[0])
    exp = SuperpixelGenerator(scale=50.0, min_size=20).generate(img)
    got = g.generate(img)
    assert len(got) == len(exp) and all((a["segmentation"] == b["segmentation"]).all() for a, b in zip(got, exp))
    assert g.ssrs_settings()["generator"] == "superpixel" and g.ssrs_settings()["checkpoint"] is None
    with pytest.raises(ValueError, match="uses no checkpoint"): G.build_generator("superpixel", "x.pth")


@pytest.mark.parametrize("name", PARAMS)
def test_records_in_sam1_format(micro, images, name):
    "Every record has SAM 1's keys and types; each box is the mask's own box (recomputed from its pixels)."
    from ssrs_nb.core import imread
    ms = micro[name][1].generate(imread(images[0]))
    # every mask kept, 2×2 points: SAM 2 returns SAM's 3 masks per point; HQ-SAM's decoder returns one (the best of
    # SAM's three, by predicted IoU, plus the HQ token's logits)
    assert len(ms) == {"sam-hq": 1, "sam2": 3}[name] * 2 * 2
    for m in ms:
        assert set(m) == set(G._RECORD_KEYS)
        assert m["segmentation"].dtype == bool and m["segmentation"].shape == (96, 112)
        ys, xs = np.nonzero(m["segmentation"])
        assert m["area"] == len(ys) and type(m["area"]) is int
        assert m["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert all(type(v) is int for v in m["bbox"] + m["crop_box"]) and m["crop_box"] == [0, 0, 112, 96]
        assert type(m["predicted_iou"]) is float and type(m["stability_score"]) is float


@pytest.mark.parametrize("name", PARAMS)
def test_generate_dataset_resume_shards_and_identity(micro, images, tmp_path, name):
    ck, gen = micro[name]
    from ssrs_nb.core import imread
    # expected maps, computed here: the generator's masks through the official per-mask loop
    exp = {p.stem: official_sgo_sgb(gen.generate(imread(p)), 50, 1) for p in images}
    out = tmp_path / "maps"
    m = generate_dataset(images, out, gen, crop=None, min_area=1, progress=False)
    assert (m["generated"], m["skipped"]) == (3, 0)
    for stem, (e_sgo, e_sgb) in exp.items():
        sgo, sgb = read_sgo_sgb(out, stem)
        np.testing.assert_array_equal(sgo, e_sgo); np.testing.assert_array_equal(sgb, e_sgb)
        assert sgo.max() > 0
    ident = json.loads((out / "manifest.json").read_text())["settings"]["generator"]
    assert ident["generator"] == name and ident["checkpoint_sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert ident["package"] == G.GENERATOR_SPECS[name].dist and ident["version"]
    assert ident["checkpoint"] == ck.name and ident["settings"]["pred_iou_thresh"] == 0.0   # a moved file is the same model
    # resume: a finished folder is skipped; a lost map is regenerated (the same maps), the others are not
    assert generate_dataset(images, out, gen, crop=None, min_area=1, progress=False)["skipped"] == 3
    for p in sgo_sgb_paths(out, "t1"): p.unlink()
    m = generate_dataset(images, out, gen, crop=None, min_area=1, progress=False)
    assert (m["generated"], m["skipped"]) == (1, 2)
    np.testing.assert_array_equal(read_sgo_sgb(out, "t1")[0], exp["t1"][0])
    # other settings (here, other thresholds) are refused rather than mixed into the folder
    other = G.build_generator(name, ck, device="cpu", **ARCH[name], **{**LOOSE, "points_per_side": 3})
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(images, out, other, crop=None, min_area=1, progress=False)
    # shards: 2 workers split the 3 images with no overlap and no gap, and make the same maps
    got = [set(generate_dataset(images, tmp_path / "sh", gen, crop=None, min_area=1, shard=s, num_shards=2,
                                progress=False)["images"]) for s in range(2)]
    assert got[0] & got[1] == set() and got[0] | got[1] == set(exp)
    for stem, (e_sgo, e_sgb) in exp.items():
        sgo, sgb = read_sgo_sgb(tmp_path / "sh", stem)
        np.testing.assert_array_equal(sgo, e_sgo); np.testing.assert_array_equal(sgb, e_sgb)


@pytest.mark.parametrize("name", PARAMS)
def test_tiled_large_image(micro, tmp_path, name):
    "A tile larger than the crop goes through generate_sgo_sgb's crops: ids unique over the tile, renumbered 1…n."
    from ssrs_nb.sam import generate_sgo_sgb
    rng = np.random.default_rng(1)
    img = np.kron(rng.integers(0, 255, (10, 10, 3)), np.ones((16, 16, 1))).astype(np.uint8)   # 160×160
    sgo, sgb = generate_sgo_sgb(img, micro[name][1], crop=96, overlap=32, min_area=1, merge_seams=False)
    ids = np.unique(sgo); ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    core = (np.arange(160)[:, None] >= 80) * 2 + (np.arange(160)[None, :] >= 80)   # the 4 crop cores
    assert np.unique(np.stack([sgo[sgo > 0], core[sgo > 0]]), axis=1).shape[1] == len(ids)   # no id in two cores


@pytest.mark.parametrize("name", PARAMS)
def test_checkpoint_errors_name_file_and_official_names(tmp_path, name):
    with pytest.raises(FileNotFoundError) as e: G.build_generator(name, tmp_path / "missing.pt")
    for official in G.GENERATOR_SPECS[name].checkpoints.values(): assert official in str(e.value)
    assert "missing.pt" in str(e.value)
    ck = G.save_micro_checkpoint(name, tmp_path / "micro.pt")
    wrong = dict(model_type="vit_b") if name == "sam-hq" else dict(config="sam2.1_hiera_t")
    with pytest.raises(ValueError, match="micro.pt: does not fit") as e: G.build_generator(name, ck, **wrong)
    assert G.GENERATOR_SPECS[name].checkpoints[wrong.get("model_type", wrong.get("config"))] in str(e.value)
    with pytest.raises(ValueError, match="unknown"): G.build_generator(name, ck, **ARCH[name], pred_iou_tresh=0.5)


def test_sam1_checkpoint_is_not_an_hq_checkpoint(tmp_path):
    if not HAVE["sam-hq"]: pytest.skip('sam-hq not installed: pip install "ssrs-nb[samhq]"')
    ck = G.save_micro_checkpoint("sam", tmp_path / "sam1.pth")
    with pytest.raises(ValueError, match="hf_token"): G.build_generator("sam-hq", ck, model_type="micro")
    # ...while the same file is a valid SAM 1 micro checkpoint, through the same factory
    assert G.build_generator("sam", ck, model_type="micro").ssrs_settings()["model_type"] == "micro"


def _papermill(tmp_path, *params):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "11_generate_sgo.ipynb"), str(tmp_path / "out.ipynb"),
           "--cwd", str(ROOT / "nbs"), "-p", "out_dir", str(tmp_path / "sgo"), "-p", "points_per_side", "2",
           "-p", "pred_iou_thresh", "0.0", "-p", "settings", '{"stability_score_thresh": 0.0, "box_nms_thresh": 1.0}',
           "-p", "crop", "0", *params]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((tmp_path / "sgo" / "manifest.json").read_text())


@pytest.mark.parametrize("name", PARAMS)
def test_papermill_11_generate_sgo(tmp_path, name):
    "`papermill nbs/11_generate_sgo.ipynb … -p generator NAME -p checkpoint FILE` with a micro checkpoint."
    ck = G.save_micro_checkpoint(name, tmp_path / f"micro_{name}.pt")
    arch = ["-p", "model_type", "micro"] if name == "sam-hq" else ["-p", "config", "micro"]
    m = _papermill(tmp_path, "-p", "generator", name, "-p", "checkpoint", str(ck), *arch)
    ident = m["settings"]["generator"]
    assert ident["generator"] == name and ident["checkpoint_sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    # the manifest on disk is the notebook's own re-run check (all skipped); the images it lists were made by the run
    assert m["total"] == m["skipped"] == len(m["images"]) == 2 and all(v["objects"] > 0 for v in m["images"].values())
    # every map has its image's size and a 0/255 SGB
    from ssrs_nb.core import imread
    for stem, v in m["images"].items():
        sgo, sgb = read_sgo_sgb(tmp_path / "sgo", stem, shape=imread(v["image"]).shape[:2])
        assert set(np.unique(sgb)) <= {0, 255} and sgo.max() == v["objects"]
    _maps_feed_training(tmp_path / "sgo", m)


def _maps_feed_training(sgo_dir, m):
    """The maps are what 10_train reads as `sgo_root`: training windows carry them and the paper's loss (object and
    boundary terms) is finite on them, with a gradient. (A full papermill 10_train run takes minutes on the shared CI
    CPU; the windows and the loss are the only places where maps enter training.)"""
    import torch

    from ssrs_nb.core import get_preset
    from ssrs_nb.data import WindowDataset, list_tiles
    from ssrs_nb.losses import total_loss
    ids = sorted(int(s.rsplit("area", 1)[1]) for s in m["images"])
    train = [i for i in ids if i in get_preset("vaihingen").train_ids]
    tiles = list_tiles("vaihingen", Path(sgo_dir) / "synthetic" / "vaihingen", "train", ids=train)
    ds = WindowDataset(tiles, sgo_dir=sgo_dir, window=64, length=4, augment=False, seed=0)
    items = [ds[i] for i in range(4)]
    assert any(int(it["sgo"].max()) > 0 for it in items) and any(int(it["sgb"].max()) > 0 for it in items)
    pred = torch.randn(4, 6, 64, 64, requires_grad=True)
    loss, parts = total_loss(pred, torch.stack([it["label"] for it in items]),
                             sgo=torch.stack([it["sgo"] for it in items]), sgb=torch.stack([it["sgb"] for it in items]))
    loss.backward()
    assert np.isfinite(list(parts.values())).all() and parts["obj"] > 0 and parts["bdy"] > 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


