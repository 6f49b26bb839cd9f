"""Sliding-window inference throughput (windows/s): ssrs_nb.inference.sliding_window_predict against the model's bare
batched forward on the same number of windows (the ceiling), and against a naive per-window Python loop (one window
per forward, slices added one by one, as the official code does). Then evaluation's labels: the arg-max taken on the
device band by band (`output="labels"`) against the scores sent to the host and arg-maxed there (the form before),
on one Vaihingen-sized scene (2048×2560) with a 1×1-conv model, so that the arg-max and not the network is measured.

    python benchmarks/inference.py [--backbone resnet18] [--size 384] [--window 256] [--stride 32] [--batch-size 8]
"""
import argparse
import time

import numpy as np
import torch

from ssrs_nb.core import get_device, image_to_tensor
from ssrs_nb.inference import sliding_window_predict, window_starts
from ssrs_nb.reference import sliding_window_naive


def _best(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args(argv)
    from ssrs_nb.unetformer import create_model
    dev = get_device(a.device)
    torch.manual_seed(0)
    C = 6
    model = create_model(a.backbone, C).to(dev).eval()
    img = (np.random.default_rng(0).random((a.size, a.size, 3)) * 255).astype(np.uint8)
    x = image_to_tensor(img).to(dev)
    n = len(window_starts(a.size, a.window, a.stride)) ** 2
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def bare():
        with torch.inference_mode():
            for b0 in range(0, n, a.batch_size):
                model(torch.rand(min(a.batch_size, n - b0), 3, a.window, a.window, device=dev)).softmax(1)
        sync()

    def ours():
        sliding_window_predict(model, img, C, a.window, a.stride, a.batch_size, device=dev); sync()

    def naive():
        sliding_window_naive(model, x, C, a.window, a.stride, device=dev); sync()

    ours()   # warm-up (and one check that the forms agree)
    err = (sliding_window_predict(model, img, C, a.window, a.stride, a.batch_size, device=dev) -
           sliding_window_naive(model, x, C, a.window, a.stride, device=dev)).abs().max().item()
    t_bare, t_ours, t_naive = (_best(f, a.reps) for f in (bare, ours, naive))
    print(f"# sliding-window inference: {a.backbone}, {a.size}x{a.size} tile, window {a.window}, stride {a.stride} "
          f"({n} windows), batch {a.batch_size}, {dev}, torch threads {torch.get_num_threads()}; max |ours - naive| = {err:.1e}")
    print(f"{'form':<40}{'s':>9}{'windows/s':>12}{'vs bare':>10}")
    for name, t in (("bare batched forward (model + softmax)", t_bare), ("sliding_window_predict", t_ours),
                    ("naive per-window loop", t_naive)):
        print(f"{name:<40}{t:>9.3f}{n / t:>12.2f}{t_bare / t:>10.3f}")
    print(f"sliding_window_predict is {t_naive / t_ours:.2f}x the naive loop and runs at "
          f"{100 * t_bare / t_ours:.1f}% of the bare forward throughput")
    t_probs, t_labels, same = labels_vs_probs(dev, a.reps)
    print(f"evaluation labels, 2048x2560 scene, 1x1-conv model, window 256, stride 256: scores + host arg-max "
          f"{t_probs:.2f} s, labels on the device {t_labels:.2f} s: {t_probs / t_labels:.2f}x (labels identical: {same})")
    return dict(bare=t_bare, ours=t_ours, naive=t_naive, windows=n, max_abs_err=err, probs_argmax=t_probs, labels=t_labels)


def labels_vs_probs(dev, reps):
    "Seconds for (scores + arg-max on the host, labels on the device) over a 2048×2560 scene, and whether they agree."
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 1).to(dev).eval()
    img = (np.random.default_rng(0).random((2048, 2560, 3)) * 255).astype(np.uint8)
    old = lambda: sliding_window_predict(net, img, 6, 256, 256, 16).argmax(0).to(torch.uint8).numpy()
    new = lambda: sliding_window_predict(net, img, 6, 256, 256, 16, output="labels").numpy()
    return _best(old, reps), _best(new, reps), bool(np.array_equal(old(), new()))


if __name__ == "__main__":
    main()
