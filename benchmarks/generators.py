"""Cost per image of each object generator (ssrs_nb.generators) on the CPU, with random-weight micro models.

Each row is one generator through the real path (checkpoint file -> build_generator -> automatic mask generator ->
masks_to_sgo_sgb), thresholds at 0 and no NMS (box_nms_thresh=1) so that random weights give every mask.
Micro models time the *pipeline* (point
grid, decoder batches, NMS, records, maps), not ViT-H or Hiera-L: those need a GPU and real weights.
SAM and HQ-SAM micro models take a 256-px input; SAM 2 keeps its 1024-px input, so its image encoder and mask
decoder work on 16x more embedding tokens (the main cost here, as with the real models).

    python benchmarks/generators.py                 # 256x256 image, 8x8 points
    python benchmarks/generators.py --points 16 --size 512
"""
import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ssrs_nb import generators as G  # noqa: E402
from ssrs_nb.sam import generate_sgo_sgb  # noqa: E402

MODULES = {"sam": "segment_anything", "sam-hq": "segment_anything_hq", "sam2": "sam2", "superpixel": "skimage"}


def main(size: int = 256, points: int = 8, repeat: int = 3):
    rng = np.random.default_rng(0)
    img = np.kron(rng.integers(0, 255, (size // 16, size // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    loose = dict(points_per_side=points, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in G.GENERATORS:
            if importlib.util.find_spec(MODULES[name]) is None:
                print(f"{name}: not installed (pip install \"ssrs-nb[{G.GENERATOR_SPECS[name].extra}]\"), skipped")
                continue
            t0 = time.perf_counter()
            if name == "superpixel": gen = G.build_generator(name)
            else:
                ck = G.save_micro_checkpoint(name, Path(d) / f"{name}.pt")
                arch = dict(config="micro") if name == "sam2" else dict(model_type="micro")
                gen = G.build_generator(name, ck, device="cpu", **arch, **loose)
            t_build = time.perf_counter() - t0
            n_masks = len(gen.generate(img))                       # warm-up (lazy imports, first allocations)
            ts, cs = [], []
            for _ in range(repeat):   # wall time, and this process's CPU time (robust to a machine shared with others)
                t, c = time.perf_counter(), time.process_time()
                sgo, _ = generate_sgo_sgb(img, gen, crop=None, min_area=1)
                ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
            params = sum(p.numel() for p in gen.inner.predictor.model.parameters()) if name != "superpixel" else 0
            rows.append((name, params, n_masks, int(sgo.max()), t_build, min(ts), min(cs)))
    print(f"CPU, {size}x{size} image, {points}x{points} points (superpixel: felzenszwalb scale 300)")
    print(f"{'generator':<11} {'params':>9} {'masks':>6} {'objects':>8} {'build s':>8} {'s / image':>10} {'CPU s / image':>14}")
    for name, p, n, k, tb, t, c in rows:
        print(f"{name:<11} {p:>9,} {n:>6} {k:>8} {tb:>8.2f} {t:>10.3f} {c:>14.3f}")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256); ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    main(a.size, a.points, a.repeat)
