"""UNetFormer speed: the batched window attention against a per-window Python loop (same inputs, checked equal),
and the whole model's forward / forward+backward at 256x256, batch 10 (ResNet-18; fp32, channels-last, bf16/fp16
autocast; the model with the naive attention swapped in for comparison).

    python benchmarks/unetformer.py            # CPU (or the GPU where one is present); prints a table
    python benchmarks/unetformer.py --swin     # also the SwinV2-base model (heavy)

`main()` returns the rows (name, naive/baseline seconds, ours seconds).
"""
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

import ssrs_nb.unetformer as U
from ssrs_nb.reference import window_attention_per_window as naive_window_attention


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def best(f, dev, repeat=3, warmup=1):
    for _ in range(warmup): f()
    sync(dev)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); sync(dev); ts.append(time.perf_counter() - t)
    return min(ts)


def pair(fa, fb, dev, repeat=3):
    "Best-of-`repeat` times of `fa` and `fb`, measured alternately (a shared machine's load drifts over both alike)."
    fa(); fb(); sync(dev)
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(best(fa, dev, 1, 0)); tb.append(best(fb, dev, 1, 0))
    return min(ta), min(tb)


@contextlib.contextmanager
def naive_attention():
    "Swap the naive per-window loop into the model (the module-level function the GLA calls)."
    old = U.window_attention
    U.window_attention = naive_window_attention
    try: yield
    finally: U.window_attention = old


def model_rows(backbone, dev, amp_dtype, batch=10, size=256, repeat=3):
    torch.manual_seed(0)
    m = U.create_model(backbone, 6).to(dev)
    x = torch.rand(batch, 3, size, size, device=dev)
    y = torch.randint(0, 6, (batch, size, size), device=dev)

    def fwd(model, xx, amp=None):
        model.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            model(xx)

    def fwd_bwd(model, xx, amp=None):
        model.train()
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            main, aux = model(xx)
            loss = F.cross_entropy(main.float(), y) + 0.4 * F.cross_entropy(aux.float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    tag = f"{backbone} {size}x{size} b{batch}"
    mcl = U.create_model(backbone, 6).to(dev).to(memory_format=torch.channels_last)
    mcl.load_state_dict(m.state_dict())
    xcl = x.contiguous(memory_format=torch.channels_last)
    short = str(amp_dtype).split('.')[-1]
    rows = []
    for name, f in [("forward", fwd), ("forward+backward", fwd_bwd)]:
        def naive(f=f):
            with naive_attention(): f(m, x)
        ta, tb = pair(naive, lambda f=f: f(m, x), dev, max(1, repeat - 1))
        rows.append((f"{tag} {name}: naive window loop vs ours (fp32)", ta, tb))
        ta, tb = pair(lambda f=f: f(m, x), lambda f=f: f(mcl, xcl), dev, repeat)
        rows.append((f"{tag} {name}: fp32 vs fp32 channels-last", ta, tb))
        ta, tb = pair(lambda f=f: f(m, x), lambda f=f: f(mcl, xcl, amp_dtype), dev, repeat)
        rows.append((f"{tag} {name}: fp32 vs channels-last + {short} autocast", ta, tb))
    return rows


def main(repeat: int = 5, swin: bool = False):
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.float16 if dev.type == "cuda" else torch.bfloat16
    rows = []
    # window attention alone, at the decoder's stride-8 map of a 256x256 batch of 10 (32x32, 64 ch, 8 heads) and
    # of a 1024x1024 image (128x128), with a partial last window (valid 125x126)
    torch.manual_seed(0)
    for B, H, W, valid in [(10, 32, 32, None), (1, 128, 128, None), (1, 128, 128, (125, 126))]:
        qkv = torch.randn(B, 3 * 64, H, W, device=dev)
        bias = torch.randn(8, 64, 64, device=dev)
        got = U.window_attention(qkv, 8, 8, bias, valid)
        want = naive_window_attention(qkv, 8, 8, bias, valid)
        vh, vw = valid or (H, W)
        assert torch.allclose(got[..., :vh, :vw], want[..., :vh, :vw], atol=1e-4), "vectorised != naive"
        t_naive, t_vec = pair(lambda q=qkv, b=bias, v=valid: naive_window_attention(q, 8, 8, b, v),
                              lambda q=qkv, b=bias, v=valid: U.window_attention(q, 8, 8, b, v), dev, repeat)
        rows.append((f"window_attention B={B} {H}x{W} valid={valid or 'all'}", t_naive, t_vec))
    rows += model_rows("resnet18", dev, amp, repeat=repeat)
    if swin: rows += model_rows("swin", dev, amp, repeat=max(1, repeat - 1))
    w = max(len(r[0]) for r in rows)
    print(f"device: {dev} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'case':<{w}}  {'baseline s':>10}  {'ours s':>8}  {'ratio':>6}")
    for name, a, b in rows:
        print(f"{name:<{w}}  {a:>10.4f}  {b:>8.4f}  {a / b:>5.2f}x")
    return rows


if __name__ == "__main__":
    main(swin="--swin" in sys.argv)
