"""Loss benchmark: vectorised `object_loss` vs a naive per-object loop (the official code's form), and
`object_loss + boundary_loss` forward+backward as a share of one UNetFormer-R18 training step, all in one run.

    python benchmarks/losses.py            # B=10, C=6, 256x256 (the paper's batch)
    python benchmarks/losses.py --quick    # a small smoke run
"""
import argparse
import time

import torch

from ssrs_nb.losses import boundary_loss, object_loss, total_loss
from ssrs_nb.reference import object_loss_official as object_loss_loop  # the official code's per-id loop


def _time(fn, repeat):
    fn()                                                           # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    return best


def _fwd_bwd(loss_fn, pred):
    def run():
        x = pred.detach().requires_grad_(True)
        loss_fn(x).backward()
    return run


def main(B=10, C=6, size=256, repeat=3, objects=(50, 256), model_steps=2):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    pred = torch.randn(B, C, size, size)
    rows = []
    print(f"# losses benchmark: B={B} C={C} {size}x{size}, torch {torch.__version__}, {threads} threads, "
          f"times = best of {repeat}")
    for K in objects:
        sgo = torch.randint(1, K + 1, (B, size, size))
        a = object_loss(pred, sgo, K).item(); b = object_loss_loop(pred, sgo, K).item()
        assert abs(a - b) <= 1e-4 * abs(b), (a, b)
        tv = _time(_fwd_bwd(lambda x, sgo=sgo, K=K: object_loss(x, sgo, K), pred), repeat)
        tn = _time(_fwd_bwd(lambda x, sgo=sgo, K=K: object_loss_loop(x, sgo, K), pred), max(1, repeat // 2))
        rows.append((f"object_loss fwd+bwd, {K} objects", tv, tn))
    print(f"{'case':40s} {'vectorised ms':>14s} {'naive loop ms':>14s} {'ratio':>8s}")
    for name, tv, tn in rows: print(f"{name:40s} {tv * 1e3:14.1f} {tn * 1e3:14.1f} {tn / tv:7.1f}x")

    sgo = torch.randint(0, 51, (B, size, size))
    sgb = (torch.rand(B, size, size) < 0.1).to(torch.uint8) * 255
    tgt = torch.randint(0, C, (B, size, size))
    t_obj = _time(_fwd_bwd(lambda x: object_loss(x, sgo), pred), repeat)
    t_bdy = _time(_fwd_bwd(lambda x: boundary_loss(x, sgb), pred), repeat)
    t_both = _time(_fwd_bwd(lambda x: object_loss(x, sgo) + boundary_loss(x, sgb), pred), repeat)
    t_bdy23 = _time(_fwd_bwd(lambda x: boundary_loss(x, sgb, variant="ssrs2023"), pred), repeat)
    print(f"object_loss fwd+bwd {t_obj * 1e3:.1f} ms | boundary_loss (agnostic) {t_bdy * 1e3:.1f} ms | "
          f"ssrs2023 {t_bdy23 * 1e3:.1f} ms | object+boundary {t_both * 1e3:.1f} ms")
    result = dict(object_ms=t_obj * 1e3, boundary_ms=t_bdy * 1e3, both_ms=t_both * 1e3,
                  ratios={name: tn / tv for name, tv, tn in rows})
    try:
        from ssrs_nb.unetformer import create_model
    except ImportError:
        print("ssrs_nb.unetformer not importable: share of a training step not measured")
        return result
    model = create_model("resnet18", C, pretrained=None).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    img = torch.rand(B, 3, size, size)
    def step():
        opt.zero_grad()
        out = model(img)
        main_out = out[0] if isinstance(out, (tuple, list)) else out
        loss, _ = total_loss(main_out, tgt, sgo, sgb)
        loss.backward(); opt.step()
    t_step = _time(step, model_steps)
    share = t_both / t_step
    print(f"UNetFormer-R18 training step (B={B}, incl. all losses): {t_step * 1e3:.0f} ms; "
          f"object+boundary fwd+bwd = {100 * share:.1f}% of it (target <= 5%)")
    result.update(step_ms=t_step * 1e3, share=share)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="B=2, 64x64, for a smoke test")
    a = ap.parse_args()
    main(**(dict(B=2, size=64, repeat=1, objects=(50,), model_steps=1) if a.quick else {}))
