"""Reading imagery safely: corrupt TIFFs raise, alpha is never applied, band choice and scaling
are explicit, decompression bombs are refused. Every file is written here by tifffile or by GDAL (rasterio), and
corrupted here; expected values are the arrays written, or worked out by hand."""
import numpy as np
import pytest
import tifffile

from ssrs_nb.core import MAX_PIXELS, imread
from ssrs_nb.data import read_image

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin


def _gdal_write(path, arr, **kw):
    "Write an H×W×C array as a GeoTIFF with GDAL (rasterio)."
    prof = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=arr.shape[2], dtype=arr.dtype.name,
                crs="EPSG:32632", transform=from_origin(500000.0, 5400000.0, 1.0, 1.0), **kw)
    with rasterio.open(path, "w", **prof) as dst: dst.write(np.moveaxis(arr, -1, 0))
    return path


def _scene(h=300, w=280, c=3, seed=0):
    "A smooth image (compresses like a real tile, so corruption lands inside compressed strips)."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = (np.sin(x[..., None] / (7 + np.arange(c))) * 60 + np.cos(y[..., None] / 11) * 60 + 128)
    return np.clip(base + rng.normal(0, 4, (h, w, c)), 0, 255).astype(np.uint8)


def _corrupt_middle(path, n=2000, seed=1):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("writer", ["tifffile", "gdal"])
def test_corrupt_tiff_raises_naming_the_file(tmp_path, writer):
    img = _scene()
    p = tmp_path / f"tile_{writer}.tif"
    if writer == "tifffile": tifffile.imwrite(p, img, photometric="rgb", compression="zlib", rowsperstrip=16)
    else: _gdal_write(p, img, compress="deflate")
    np.testing.assert_array_equal(imread(p), img)                       # intact: read exactly
    _corrupt_middle(p)
    with pytest.raises(ValueError, match=rf"{p.name}: TIFF could not be decoded.*corrupt"):
        imread(p)
    with pytest.raises(ValueError, match=p.name): read_image(p)


def test_gdal_alpha_band_is_never_premultiplied(tmp_path):
    rgba = _scene(40, 50, 4, seed=2)
    rgba[..., 3] = np.random.default_rng(3).integers(0, 256, (40, 50))    # a varying alpha
    p = _gdal_write(tmp_path / "rgba.tif", rgba)                               # GDAL's defaults
    with rasterio.open(p) as src: assert src.colorinterp[3].name == "alpha"   # GDAL made band 4 an alpha extra sample
    with pytest.raises(ValueError, match=r"rgba.tif: has 4 bands; choose .* bands=\(…\)"): imread(p)
    np.testing.assert_array_equal(imread(p, bands=(1, 2, 3, 4)), rgba)       # stored values, not × alpha / 255
    np.testing.assert_array_equal(read_image(p, bands=(1, 2, 3)), rgba[..., :3])


def test_four_band_needs_a_choice(tmp_path):
    rgbn = _scene(30, 20, 4, seed=4)
    p = _gdal_write(tmp_path / "rgbn.tif", rgbn)
    with pytest.raises(ValueError, match=r"rgbn.tif: has 4 bands.*--bands 1,2,3"): read_image(p)
    np.testing.assert_array_equal(read_image(p, bands=(4, 1, 2)), rgbn[..., [3, 0, 1]])
    with pytest.raises(ValueError, match=r"no band 5: it has 4 band\(s\)"): read_image(p, bands=(1, 2, 5))


def test_uint16_needs_a_stated_scale(tmp_path):
    u16 = np.array([[[0, 4095, 2048], [100, 5000, 1]], [[65535, 16, 17], [4094, 4096, 2047]]], np.uint16)
    p = _gdal_write(tmp_path / "u16.tif", u16)
    with pytest.raises(ValueError, match=r"u16.tif: image has dtype uint16.*scale="): read_image(p)
    # by hand: round(255 · min(x, 4095) / 4095)
    want = np.array([[[0, 255, 128], [6, 255, 0]], [[255, 1, 1], [255, 255, 127]]], np.uint8)
    np.testing.assert_array_equal(read_image(p, scale=4095), want)
    np.testing.assert_array_equal(read_image(p, scale=(16, 17))[1, 0], [255, 0, 255])
    f32 = u16.astype(np.float32) / 4095
    q = _gdal_write(tmp_path / "f32.tif", f32)
    np.testing.assert_array_equal(read_image(q, scale=1.0), want)
    with pytest.raises(ValueError, match="image has dtype float32"): read_image(q)


def test_decompression_bomb_is_refused(tmp_path):
    p = tmp_path / "bomb.tif"
    with rasterio.open(p, "w", driver="GTiff", width=30000, height=30000, count=1, dtype="uint8", tiled=True,
                       compress="deflate", sparse_ok=True):
        pass                                                              # header only: ~1 MB on disk
    assert p.stat().st_size < 4_000_000
    with pytest.raises(ValueError, match=r"bomb.tif: declares 30000×30000 = 900,000,000 px.*max_pixels=1,000"):
        imread(p, max_pixels=1000)
    with pytest.raises(ValueError, match=rf"max_pixels={MAX_PIXELS:,}"): imread(p)
    small = _gdal_write(tmp_path / "small.tif", _scene(20, 30))
    with pytest.raises(ValueError, match="max_pixels=599"): read_image(small, max_pixels=599)
    assert read_image(small, max_pixels=600).shape == (20, 30, 3)          # the parameter raises the limit


def test_lzw_tiff_without_imagecodecs_says_what_to_install(tmp_path):
    "An LZW TIFF read where imagecodecs is missing (a bare GPU image, say): the error names the package, not corruption."
    import subprocess
    import sys
    p = tmp_path / "lzw.tif"
    tifffile.imwrite(p, _scene(), compression="lzw")
    code = f"import sys; sys.modules['imagecodecs'] = None\nfrom ssrs_nb.core import imread\nimread({str(p)!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert f"{p}: TIFF compressed with <COMPRESSION.LZW: 5>" in r.stderr, r.stderr[-2000:]
    assert "pip install imagecodecs" in r.stderr, r.stderr[-2000:]
    assert "corrupt" not in r.stderr.splitlines()[-1]
    assert imread(p).shape == (300, 280, 3)                        # with imagecodecs (this process) it reads
