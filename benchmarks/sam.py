"""SGO/SGB post-processing: `masks_to_sgo_sgb` (vectorised) against the official per-mask loop, and the cost of
writing maps, of a tiny-SAM generation and of a re-run over a finished folder.

    python benchmarks/sam.py            # prints a table; `main()` returns the rows
"""
import tempfile
import time
from pathlib import Path

import numpy as np

from ssrs_nb.core import imwrite_png
from ssrs_nb.generators import generator_from_model
from ssrs_nb.maps import generate_dataset
from ssrs_nb.reference import official_sgo_sgb as naive_sgo_sgb  # the oracle the tests use
from ssrs_nb.reference import random_disc_masks
from ssrs_nb.sam import build_tiny_sam, masks_to_sgo_sgb


def random_masks(n, H, W, seed=0):
    "n SAM-like records: overlapping random discs of radius 3 … min(H, W)/6."
    return random_disc_masks(n, H, W, seed=seed, r_min=3, r_max=min(H, W) / 6)


def best(f, repeat=3):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return min(ts), out


def main(repeat: int = 3):
    rows = []
    for n, H, W in [(100, 1024, 1024), (1000, 512, 512), (3000, 256, 256)]:
        ms = random_masks(n, H, W)
        t_vec, got = best(lambda ms=ms: masks_to_sgo_sgb(ms), repeat)
        t_naive, exp = best(lambda ms=ms: naive_sgo_sgb(ms), 1)
        assert np.array_equal(got[0], exp[0]) and np.array_equal(got[1], exp[1]), "vectorised != naive"
        rows.append((f"masks_to_sgo_sgb {n} masks {H}x{W}", t_naive, t_vec))
        del ms
    # post-processing + writing per 1024x1024 image with 100 masks, against a tiny-SAM generation of that image
    ms = random_masks(100, 1024, 1024, seed=1)
    with tempfile.TemporaryDirectory() as d:
        def post():
            sgo, sgb = masks_to_sgo_sgb(ms)
            imwrite_png(Path(d) / "x_sgb.png", sgb); imwrite_png(Path(d) / "x_sgo.png", sgo)
        t_post, _ = best(post, repeat)
        img = (np.random.default_rng(0).integers(0, 255, (32, 32, 3)).repeat(32, 0).repeat(32, 1)).astype(np.uint8)
        gen = generator_from_model("sam", build_tiny_sam(), points_per_side=8, pred_iou_thresh=0.0,
                                        stability_score_thresh=0.0, box_nms_thresh=1.0)
        t_sam, masks = best(lambda: gen.generate(img), 1)
        rows.append((f"tiny-SAM generate 1024x1024 ({len(masks)} masks) vs post+write 100 masks", t_sam, t_post))
        # re-run over an already generated folder (maps present: only headers are read)
        ims = []
        for k in range(50):
            p = Path(d) / "img" / f"t{k:03d}.png"; imwrite_png(p, img[:256, :256]); ims.append(p)
        from ssrs_nb.sam import SuperpixelGenerator
        spg = SuperpixelGenerator(scale=300)
        t_first, _ = best(lambda: generate_dataset(ims, Path(d) / "maps", spg, crop=None, progress=False), 1)
        t_rerun, m = best(lambda: generate_dataset(ims, Path(d) / "maps", spg, crop=None, progress=False), repeat)
        assert m["skipped"] == 50
        rows.append(("generate_dataset 50 images 256x256: first run vs re-run", t_first, t_rerun))
    print(f"{'case':<78} {'slow/base s':>12} {'fast s':>10} {'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<78} {a:>12.4f} {b:>10.4f} {a / b:>7.1f}x")
    return rows


if __name__ == "__main__":
    main()
