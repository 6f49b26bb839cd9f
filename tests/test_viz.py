"Tests of ssrs_nb.viz: colours, Fig. 1 / Fig. 3 panels, overlays, object look-up and the headless viewer."
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ssrs_nb.core import imread, imwrite_png
from ssrs_nb.viz import (
    ObjectIndex,
    SGOViewer,
    colorize,
    colorize_sgo,
    fig1_panel,
    fig3_panel,
    id_colors,
    overlay,
    sgo_viewer_from_dir,
)

LOVEDA = [(255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128)]


def test_colorize_matches_loop():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 7, (9, 11)); lab[0, 0] = 255
    got = colorize(lab, "loveda")
    for y in range(9):
        for x in range(11):
            exp = (0, 0, 0) if lab[y, x] == 255 else LOVEDA[lab[y, x]]
            assert tuple(got[y, x]) == exp
    with pytest.raises(ValueError, match="outside the palette"): colorize(np.array([[7]]), "loveda")
    with pytest.raises(ValueError, match="H×W"): colorize(np.zeros((2, 2, 3), int), "loveda")


def test_id_colors_stable_and_distinct():
    a, b = id_colors(10), id_colors(300)
    np.testing.assert_array_equal(a, b[:11])
    assert tuple(b[0]) == (0, 0, 0) and len({tuple(c) for c in b[1:51]}) == 50
    sgo = np.array([[0, 4], [300, 4]])
    np.testing.assert_array_equal(colorize_sgo(sgo), np.array([[b[0], b[4]], [b[300], b[4]]]))


def test_overlay_by_hand():
    img = np.full((3, 3, 3), 200, np.uint8)
    gt = np.array([[1, 1, 255]] * 3); sgb = np.zeros((3, 3)); sgb[2, 2] = 255
    o = overlay(img, gt=gt, sgb=sgb, palette="vaihingen", alpha=0.25)
    assert tuple(o[0, 0]) == (150, 150, 214)           # 0.75*200 + 0.25*(0, 0, 255), 213.75 rounded
    assert tuple(o[0, 2]) == (200, 200, 200)           # ignore pixels are not tinted
    assert tuple(o[2, 2]) == (255, 255, 0)             # boundary colour on top
    with pytest.raises(ValueError, match="SGB is"): overlay(img, sgb=np.zeros((2, 2)))


def test_object_index():
    sgo = np.array([[1, 1, 0], [2, 2, 2]])
    ix = ObjectIndex(sgo)
    assert ix.at(1, 0) == (2, 3) and ix.at(0, 1) == (1, 2) and ix.at(0, 2) == (0, 1)
    assert "no object" in ix.describe(0, 2)
    with pytest.raises(ValueError, match="outside"): ix.at(-1, 0)


def test_panels():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (16, 16, 3)).astype(np.uint8); gt = rng.integers(0, 6, (16, 16))
    sgo = rng.integers(0, 5, (16, 16)); sgb = (rng.random((16, 16)) < 0.2).astype(np.uint8) * 255
    fig = fig1_panel([(img, gt, sgo, sgb), dict(image=img, sgo=sgo)], "vaihingen", dpi=40)
    assert len(fig.axes) == 8 and [a.get_title() for a in fig.axes[:4]] == ["(a) image", "(b) ground truth", "(c) SGO", "(d) SGB"]
    np.testing.assert_array_equal(fig.axes[2].get_images()[0].get_array(), colorize_sgo(sgo))
    assert not fig.axes[5].get_images()                # missing GT → empty panel
    fig3 = fig3_panel([(img, gt, [gt, gt, gt])], "vaihingen", names=("a", "b", "c"), dpi=40)
    assert [a.get_title() for a in fig3.axes][2:] == ["(c) a", "(d) b", "(e) c"]
    plt.close("all")


def test_viewer_headless(tmp_path):
    rng = np.random.default_rng(2); ims = []
    for k in range(2):
        p = tmp_path / f"t{k}.png"; imwrite_png(p, rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)); ims.append(p)
        sgo = np.zeros((20, 24), np.uint16); sgo[2:8, 3:9] = k + 1
        imwrite_png(tmp_path / f"t{k}_sgo.png", sgo); imwrite_png(tmp_path / f"t{k}_sgb.png", np.zeros((20, 24), np.uint8))
    v = sgo_viewer_from_dir(ims, tmp_path, dpi=40)
    w = v.show()
    assert type(w).__name__ == "VBox"
    assert v.info(3, 4) == "t0 (y=3, x=4): object 1, 36 px"
    v.state["item"] = "t1"
    assert v.info(3, 4) == "t1 (y=3, x=4): object 2, 36 px"
    v.state.update(sgo=False, sgb=False, gt=False)
    np.testing.assert_array_equal(v.composite(), imread(ims[1]))
    assert v.render() is v.fig
    with pytest.raises(ValueError, match="no items"): SGOViewer([], dict)
    plt.close("all")


def test_fig1_on_real_crop(realdata):
    img = imread(realdata / "loveda/Train/Rural/images_png/1.png")[:256, :256]
    raw = imread(realdata / "loveda/Train/Rural/masks_png/1.png")[:256, :256]
    gt = np.where(raw == 0, 255, raw.astype(np.int64) - 1)   # LoveDA: 0 no-data, 1-7 classes
    from ssrs_nb.sam import SuperpixelGenerator, masks_to_sgo_sgb
    sgo, sgb = masks_to_sgo_sgb(SuperpixelGenerator().generate(img))
    fig = fig1_panel([(img, gt, sgo, sgb)], "loveda", dpi=40)
    np.testing.assert_array_equal(fig.axes[1].get_images()[0].get_array(), colorize(gt, "loveda"))
    plt.close("all")
