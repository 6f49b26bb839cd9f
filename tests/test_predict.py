"""`ssrs-predict` and nbs/12_predict.ipynb on GeoTIFFs written here with rasterio (a CRS, nodata, 3 and 4 bands, uint8
and uint16) and random-weight ResNet-18 UNetFormers. The expected labels are the arg-max of the whole-scene
`sliding_window_predict` on the image read by the other reader (`read_image`, tifffile)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin

from ssrs_nb.core import get_preset
from ssrs_nb.data import read_image
from ssrs_nb.inference import sliding_window_predict
from ssrs_nb.synthetic import _vaihingen_scene
from ssrs_nb.unetformer import create_model

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
TRANSFORM = from_origin(496000.0, 5420000.0, 0.5, 0.5)


def _write(path, arr, crs="EPSG:32632", nodata=None):
    prof = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=arr.shape[2], dtype=arr.dtype.name,
                crs=crs, transform=TRANSFORM, nodata=nodata)
    with rasterio.open(path, "w", **prof) as dst: dst.write(np.moveaxis(arr, -1, 0))
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    img, _ = _vaihingen_scene(np.random.default_rng(5), 150, 130)
    img = img.copy(); img[-10:, -25:] = 0                                  # nodata corner (all bands 0)
    torch.manual_seed(1); model = create_model("resnet18", 6).eval()
    torch.save(model.state_dict(), d / "w.pth")
    want = sliding_window_predict(model, img, 6, window=64, stride=32, batch_size=4).argmax(0).numpy().astype(np.uint8)
    nd = (img == 0).all(-1); want[nd] = 255
    return dict(dir=d, img=img, want=want, nodata=nd, model=model, uint8=_write(d / "scene.tif", img, nodata=0))


def _cli(*args):
    return subprocess.run([str(BIN / "ssrs-predict"), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_cli_matches_whole_scene_and_keeps_georeferencing(scene):
    d = scene["dir"]
    np.testing.assert_array_equal(read_image(scene["uint8"]), scene["img"])
    r = _cli(scene["uint8"], d / "out.tif", "--weights", d / "w.pth", "--dataset", "vaihingen", "--window", 64,
             "--block", 64, "--batch-size", 4, "--probabilities", d / "prob.tif", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    with rasterio.open(d / "out.tif") as o:
        assert (o.crs.to_epsg(), o.transform, o.shape, o.nodata, o.dtypes[0]) == (32632, TRANSFORM, (150, 130), 255, "uint8")
        assert o.profile["tiled"] and o.profile["compress"] == "deflate"
        assert o.colormap(1)[3] == (*get_preset("vaihingen").palette[3], 255)
        np.testing.assert_array_equal(o.read(1), scene["want"])
    with rasterio.open(d / "prob.tif") as p:
        assert p.count == 6 and p.nodata == 255
        prob = p.read()
        assert (prob[:, scene["nodata"]] == 255).all()
        s = prob[:, ~scene["nodata"]].astype(int).sum(0)                    # 254·Σp = 254 up to rounding
        assert np.abs(s - 254).max() <= 3
    assert sorted(x.name for x in d.iterdir() if x.name.startswith(".")) == []   # no temp files left


def _main(capsys, *args):
    "The CLI function in this process (the subprocess test above covers the installed command)."
    from ssrs_nb.predict import main
    rc = main([str(a) for a in args]); out = capsys.readouterr()
    return rc, out.err


def test_four_band_uint16_and_run_folder(scene, capsys):
    d = scene["dir"]
    u16 = np.concatenate([scene["img"][..., [2]], scene["img"]], -1).astype(np.uint16) * 257   # band 1 extra
    src = _write(d / "u16.tif", u16, nodata=0)
    rc, err = _main(capsys, src, d / "o16.tif", "--weights", d / "w.pth", "--window", 64, "--device", "cpu")
    assert rc == 1 and "u16.tif: has 4 bands" in err and "--bands" in err
    rc, err = _main(capsys, src, d / "o16.tif", "--weights", d / "w.pth", "--bands", "2,3,5", "--device", "cpu")
    assert rc == 1 and "no band 5: it has 4 band(s)" in err
    rc, err = _main(capsys, src, d / "o16.tif", "--weights", d / "w.pth", "--bands", "2,3,4", "--window", 64, "--device", "cpu")
    assert rc == 1 and "u16.tif: image has dtype uint16" in err and "--scale" in err
    # a run folder: window and dataset from metrics.json, weights from final.weights; uint16 × 257 / 65535 = the uint8
    run = d / "run"; run.mkdir()
    torch.save(scene["model"].state_dict(), run / "model_best.pth")
    (run / "metrics.json").write_text(json.dumps({"config": {"dataset": "vaihingen", "backbone": "resnet18", "window": 64},
                                                  "final": {"weights": "model_best.pth"}, "status": "finished"}))
    rc, err = _main(capsys, src, d / "o16.tif", "--run", run, "--bands", "2,3,4", "--scale", 65535, "--device", "cpu", "--quiet")
    assert rc == 0, err
    with rasterio.open(d / "o16.tif") as o:
        np.testing.assert_array_equal(o.read(1), scene["want"])          # stride 32 = half the run's window
        assert o.colormap(1)[1] == (0, 0, 255, 255)


def test_errors_name_the_file(scene, capsys):
    d = scene["dir"]
    (d / "notes.tif").write_text("these are notes, not a raster")
    rc, err = _main(capsys, d / "notes.tif", d / "x.tif", "--weights", d / "w.pth")
    assert rc == 1 and "notes.tif: not a raster GDAL can read" in err
    rc, err = _main(capsys, scene["uint8"], d / "x.tif", "--weights", d / "w.pth", "--dataset", "loveda")
    assert rc == 1 and "w.pth: weights are for 6 classes, but 7" in err
    nocrs = _write(d / "nocrs.tif", scene["img"][:70, :70], crs=None)
    with pytest.warns(UserWarning, match="nocrs.tif: has no CRS"):
        rc, err = _main(capsys, nocrs, d / "x.tif", "--weights", d / "w.pth", "--window", 64, "--device", "cpu", "--quiet")
    assert rc == 0, err
    with rasterio.open(d / "x.tif") as o:
        assert o.crs is None
        np.testing.assert_array_equal(o.read(1), sliding_window_predict(scene["model"], scene["img"][:70, :70], 6,
                                      window=64, stride=32).argmax(0).numpy())


def test_papermill_12_predict(scene, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "nb.ipynb"
    papermill.execute_notebook(str(ROOT / "nbs/12_predict.ipynb"), str(out), cwd=str(ROOT / "nbs"), kernel_name="python3",
                               parameters=dict(input=str(scene["uint8"]), output=str(tmp_path / "pm.tif"),
                                               weights=str(scene["dir"] / "w.pth"), dataset="vaihingen", window=64,
                                               stride=32, out_dir=str(tmp_path)), progress_bar=False)
    with rasterio.open(tmp_path / "pm.tif") as o: np.testing.assert_array_equal(o.read(1), scene["want"])
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter"):
        papermill.execute_notebook(str(ROOT / "nbs/12_predict.ipynb"), str(tmp_path / "bad.ipynb"), cwd=str(ROOT / "nbs"),
                                   kernel_name="python3", parameters=dict(strid=32), progress_bar=False)


def test_papermill_11_generate_sgo_on_any_raster(scene, tmp_path):
    """SGO/SGB for a user's 4-band uint16 GeoTIFF: bands and scale chosen explicitly, maps equal to those of the same
    pixels as an 8-bit RGB PNG, and georeferenced copies beside the PNGs with the image's CRS and transform."""
    papermill = pytest.importorskip("papermill")
    from ssrs_nb.core import imwrite_png
    from ssrs_nb.generators import build_generator
    from ssrs_nb.maps import generate_dataset, read_sgo_sgb
    img = scene["img"]
    nir = np.full(img.shape[:2] + (1,), 7, np.uint16)
    _write(tmp_path / "img" / "geo.tif" if (tmp_path / "img").mkdir() is None else None,
           np.concatenate([nir, img.astype(np.uint16) * 16], -1))                 # NIR first, then the 3 bands ×16
    out = tmp_path / "sgo"
    papermill.execute_notebook(str(ROOT / "nbs/11_generate_sgo.ipynb"), str(tmp_path / "o.ipynb"), cwd=str(ROOT / "nbs"),
                               kernel_name="python3", progress_bar=False,
                               parameters=dict(dataset="", images=str(tmp_path / "img" / "*.tif"), out_dir=str(out),
                                               bands="2,3,4", scale="4080", geotiff=True, crop=0))
    sgo, sgb = read_sgo_sgb(out, "geo")
    imwrite_png(tmp_path / "png" / "geo.png", img)                                 # the same pixels, 8-bit RGB
    generate_dataset([tmp_path / "png" / "geo.png"], tmp_path / "ref", build_generator("superpixel"), crop=None,
                     progress=False)
    want_sgo, want_sgb = read_sgo_sgb(tmp_path / "ref", "geo")
    np.testing.assert_array_equal(sgo, want_sgo); np.testing.assert_array_equal(sgb, want_sgb)
    for name, want in (("sgo", sgo), ("sgb", sgb)):
        with rasterio.open(out / f"geo_{name}.tif") as t:
            assert t.crs.to_string() == "EPSG:32632" and t.transform == TRANSFORM
            np.testing.assert_array_equal(t.read(1), want)


def test_nan_pixels_are_nodata(scene):
    "A float32 scene with NaN pixels and no nodata tag: 255 exactly there, classes elsewhere (the installed command)."
    d = scene["dir"]
    f = (scene["img"] / 255).astype(np.float32); f[40:52, 30:70, 2] = np.nan
    r = _cli(_write(d / "nan.tif", f), d / "onan.tif", "--weights", d / "w.pth", "--window", 64, "--scale", "p1,99",
             "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    with rasterio.open(d / "onan.tif") as o: lab = o.read(1)
    np.testing.assert_array_equal(lab == 255, np.isnan(f).any(-1))


def test_gis_outputs_cog_legend_and_polygons(tmp_path):
    """A 600×520 scene through the installed command with --vector: GDAL (or rasterio, which bundles it) reports the COG
    layout with overviews, the category names and attribute table; the GeoPackage's polygons (read back by pyogrio)
    carry class ids and names, the scene's CRS, and per class the area of the raster's pixels of that class."""
    import shutil

    pyogrio = pytest.importorskip("pyogrio")
    shapely = pytest.importorskip("shapely")
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    img, _ = _vaihingen_scene(np.random.default_rng(7), 600, 520)
    src = _write(tmp_path / "big.tif", img)
    torch.manual_seed(2); torch.save(create_model("resnet18", 6).state_dict(), tmp_path / "w.pth")
    out, gpkg = tmp_path / "classes.tif", tmp_path / "classes.gpkg"
    r = _cli(src, out, "--weights", tmp_path / "w.pth", "--dataset", "vaihingen", "--window", 64, "--stride", 64,
             "--probabilities", tmp_path / "prob.tif", "--vector", gpkg, "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    classes = list(get_preset("vaihingen").classes)
    for f in (out, tmp_path / "prob.tif"):
        assert cogeo.cog_validate(f, strict=True) == (True, [], []), f
        with rasterio.open(f) as o:
            assert o.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and o.overviews(1) == [2, 4]
    if shutil.which("gdalinfo"):
        info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True, check=True).stdout)
        assert info["bands"][0]["categories"] == classes
        assert [row["f"][:2] for row in info["rat"]["row"]] == [[i, c] for i, c in enumerate(classes)]
    assert (tmp_path / "classes.qml").exists()
    with rasterio.open(out) as o: lab, px = o.read(1), abs(o.transform.a * o.transform.e)
    meta, _, geom, (ids, names) = pyogrio.raw.read(gpkg)
    assert meta["fields"].tolist() == ["class_id", "class"] and meta["geometry_type"] == "Polygon"
    assert meta["crs"] == "EPSG:32632"
    assert all(names[k] == classes[ids[k]] for k in range(len(ids)))
    area = np.bincount(ids, weights=shapely.area(shapely.from_wkb(geom)), minlength=6)
    want = np.bincount(lab.ravel(), minlength=256)[:6] * px
    np.testing.assert_allclose(area, want, rtol=0.005)          # the done-when bound; exact in fact (pixel edges)
    assert np.array_equal(area, want), (area, want)
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith(".")) == []
