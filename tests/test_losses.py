"Losses against independent naive implementations (loops, NumPy window maxima) and hand-worked values."
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrs_nb.losses import object_loss, boundary_loss, total_loss, segmentation_loss, SAMLoss, ABLATIONS


def obj_naive(pred, sgo, K=50):
    "Official-style formula: per image, per id, (n/(n+1))^2 * sum (x - mean)^2, over B*C*H*W."
    B, C, H, W = pred.shape
    tot = pred.new_zeros(())
    for b in range(B):
        ids = sgo[b].long()
        for i in torch.unique(ids).tolist():
            if i < 1 or (K is not None and i > K): continue
            m = (ids == i).to(pred.dtype)
            n = m.sum()
            mu = (pred[b] * m).sum((1, 2), keepdim=True) / n
            tot = tot + (n / (n + 1)) ** 2 * (((pred[b] - mu) ** 2) * m).sum()
    return tot / (B * C * H * W)


def pool_np(a, k):
    r = (k - 1) // 2; H, W = a.shape; out = np.empty_like(a)
    for y in range(H):
        for x in range(W): out[y, x] = a[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].max()
    return out


def bf1_np(bp, g, theta):
    P = (bp * pool_np(g, theta)).sum() / (bp.sum() + 1e-7)
    R = (pool_np(bp, theta) * g).sum() / (g.sum() + 1e-7)
    return 2 * P * R / (P + R + 1e-7)


def bdy_naive(pred, sgb, t0=3, t=5, variant="agnostic"):
    p = torch.softmax(pred.double(), 1).numpy(); s = np.asarray(sgb) > 0
    B, C = p.shape[:2]; vals = []
    for b in range(B):
        if variant == "agnostic":
            if not s[b].any(): continue
            bp = np.max([pool_np(1 - p[b, c], t0) - (1 - p[b, c]) for c in range(C)], axis=0)
            vals.append(1 - bf1_np(bp, s[b].astype(float), t))
        else:
            for c in range(C):
                tc = (s[b].astype(int) == c).astype(float)
                vals.append(1 - bf1_np(pool_np(1 - p[b, c], t0) - (1 - p[b, c]), pool_np(1 - tc, t0) - (1 - tc), t))
    return float(np.mean(vals)) if vals else 0.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64, torch.uint16])
@pytest.mark.parametrize("shape,hi,K", [((2, 6, 16, 16), 60, 50), ((1, 3, 7, 31), 300, 256), ((3, 2, 5, 5), 4, 50),
                                        ((2, 4, 12, 9), 200, None)])
def test_object_loss_matches_naive_value_and_grad(dtype, shape, hi, K):
    g = torch.Generator().manual_seed(hash((str(dtype), shape)) % 2**31)
    B, C, H, W = shape
    if dtype == torch.uint8: hi = min(hi, 256)
    if dtype == torch.uint16 and not hasattr(torch, "uint16"): pytest.skip("no torch.uint16")
    pred = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    sgo = torch.randint(0, hi, (B, H, W), generator=g).to(dtype)
    a, b = object_loss(pred, sgo, K), obj_naive(pred, sgo, K)
    assert a.item() == pytest.approx(b.item(), rel=1e-10, abs=1e-14)
    ga, = torch.autograd.grad(a, pred); gb, = torch.autograd.grad(b, pred)
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-14)


def test_object_loss_float32_relative_1e5():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 6, 96, 96, generator=g, dtype=torch.float64) * 2 + 3
    sgo = torch.randint(0, 51, (2, 96, 96), generator=g)
    sgo[0, :48] = 7                                     # one big object (~4.6k px)
    ref = obj_naive(pred, sgo).item()
    assert object_loss(pred.float(), sgo).item() == pytest.approx(ref, rel=1e-5)


def test_object_loss_hand_worked_and_edge_cases():
    p = torch.tensor([1., 3, 5, 7]).reshape(1, 1, 1, 4)
    assert object_loss(p, torch.tensor([[[1, 1, 2, 0]]])).item() == pytest.approx(2 / 9, rel=1e-6)
    # a (H, W) map is accepted for B == 1
    assert object_loss(p, torch.tensor([[1, 1, 2, 0]])).item() == pytest.approx(2 / 9, rel=1e-6)
    # no objects: 0, finite gradient
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    l = object_loss(x, torch.zeros(2, 8, 8, dtype=torch.uint8)); l.backward()
    assert l.item() == 0 and torch.isfinite(x.grad).all()
    # ids above max_objects ignored (id == max_objects counted)
    s = torch.tensor([[[50, 50, 51, 51]]])
    assert object_loss(p, s).item() == pytest.approx((2 / 3) ** 2 * 2 / 4, rel=1e-6)
    # huge sparse ids, negative ids ignored
    s = torch.tensor([[[10**15, 10**15, -3, -3]]])
    assert object_loss(p, s, None).item() == pytest.approx((2 / 3) ** 2 * 2 / 4, rel=1e-6)
    # numpy input, half precision logits
    assert object_loss(p.half(), np.array([[[1, 1, 2, 0]]])).item() == pytest.approx(2 / 9, rel=1e-3)
    # constant prediction per object: exactly 0 even for large objects
    const = torch.full((1, 2, 256, 256), 7.3)
    assert object_loss(const, torch.ones(1, 256, 256, dtype=torch.long)).item() == 0.0
    with pytest.raises(ValueError, match="expected \\(B, H, W\\)"): object_loss(p, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"): object_loss(p, torch.zeros(1, 1, 4))


@pytest.mark.parametrize("variant", ["agnostic", "ssrs2023"])
@pytest.mark.parametrize("B,C,H,W,t0,t", [(2, 3, 12, 10, 3, 5), (1, 6, 9, 13, 5, 3), (3, 2, 8, 8, 3, 7)])
def test_boundary_loss_matches_naive(variant, B, C, H, W, t0, t):
    g = torch.Generator().manual_seed(B * 100 + C)
    pred = torch.randn(B, C, H, W, generator=g, dtype=torch.float64) * 2
    sgb = (torch.rand(B, H, W, generator=g) < 0.25).to(torch.uint8) * 255
    sgb[0] = 0                                         # an image without SGB pixels
    assert boundary_loss(pred, sgb, t0, t, variant).item() == pytest.approx(bdy_naive(pred, sgb, t0, t, variant), abs=1e-6)


def bdy_torch_ref(pred, sgb, t0=3, t=5, variant="agnostic"):
    "Autograd reference written with F.max_pool2d / torch.max (b_pred has kinks at its zeros, so no gradcheck)."
    pool = lambda x, k: F.max_pool2d(x, k, 1, (k - 1) // 2)
    p = torch.softmax(pred, 1); s = torch.as_tensor(sgb) > 0
    def bf1(bp, g, dims):
        P = (bp * pool(g, t)).sum(dims) / (bp.sum(dims) + 1e-7)
        R = (pool(bp, t) * g).sum(dims) / (g.sum(dims) + 1e-7)
        return 2 * P * R / (P + R + 1e-7)
    if variant == "agnostic":
        bp = torch.max(pool(1 - p, t0) - (1 - p), dim=1, keepdim=True).values
        v = 1 - bf1(bp, s[:, None].to(p.dtype), (1, 2, 3))
        has = s.flatten(1).any(1)
        return v[has].mean()
    oh = F.one_hot(s.long(), p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    return (1 - bf1(pool(1 - p, t0) - (1 - p), pool(1 - oh, t0) - (1 - oh), (2, 3))).mean()


@pytest.mark.parametrize("variant", ["agnostic", "ssrs2023"])
def test_boundary_loss_grad_matches_reference(variant):
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 4, 14, 11, generator=g, dtype=torch.float64, requires_grad=True)
    sgb = (torch.rand(2, 14, 11, generator=g) < 0.3)
    a, b = boundary_loss(pred, sgb, variant=variant), bdy_torch_ref(pred, sgb, variant=variant)
    ga, = torch.autograd.grad(a, pred); gb, = torch.autograd.grad(b, pred)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-9)
    assert ga.abs().sum() > 0


def test_boundary_loss_hand_worked():
    lab = torch.tensor([0, 0, 0, 1, 1, 1]).repeat(4, 1)
    logits = (F.one_hot(lab, 2).permute(2, 0, 1)[None].float() - 0.5) * 60
    col = lambda j: (torch.arange(6) == j).repeat(4, 1)[None]
    assert boundary_loss(logits, col(0)).item() == pytest.approx(1 / 3, abs=1e-5)
    assert boundary_loss(logits, col(2)).item() == pytest.approx(0.0, abs=1e-5)
    assert boundary_loss(logits, torch.zeros(1, 4, 6, dtype=torch.bool)).item() == 0.0
    x = torch.randn(2, 6, 16, 16, requires_grad=True)
    boundary_loss(x, torch.rand(2, 16, 16) < 0.2).backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum((0, 2, 3)) > 0).all()
    with pytest.raises(ValueError, match="odd"): boundary_loss(logits, col(0), theta=4)


def test_total_loss_parts_and_switches():
    g = torch.Generator().manual_seed(4)
    pred = torch.randn(2, 4, 9, 9, generator=g, requires_grad=True)
    tgt = torch.randint(0, 4, (2, 9, 9), generator=g); tgt[1, :4] = 255
    sgo = torch.randint(0, 5, (2, 9, 9), generator=g); sgb = torch.rand(2, 9, 9, generator=g) < 0.2
    keep = tgt != 255
    logp = torch.log_softmax(pred.detach().double(), 1).permute(0, 2, 3, 1)[keep]
    ce = -logp.gather(1, tgt[keep][:, None]).mean().item()
    obj, bdy = obj_naive(pred.detach().double(), sgo).item(), bdy_naive(pred.detach(), sgb)
    loss, parts = total_loss(pred, tgt, sgo, sgb, lambda_obj=0.7, lambda_bdy=0.3)
    assert parts["seg"] == pytest.approx(ce, rel=1e-5)
    assert parts["obj"] == pytest.approx(obj, rel=1e-5) and parts["bdy"] == pytest.approx(bdy, abs=1e-6)
    assert parts["total"] == pytest.approx(ce + 0.7 * obj + 0.3 * bdy, rel=1e-5)
    assert loss.item() == pytest.approx(parts["total"], rel=1e-6)
    for name, flags in ABLATIONS.items():
        _, p = SAMLoss(ablation=name)(pred, tgt, sgo, sgb)
        exp = ce + (obj if flags["use_obj"] else 0) + (0.1 * bdy if flags["use_bdy"] else 0)
        assert p["total"] == pytest.approx(exp, rel=1e-5), name
    assert segmentation_loss(pred, torch.full((2, 9, 9), 255)).item() == 0.0
    with pytest.raises(ValueError, match="use_bdy=False"): total_loss(pred, tgt, sgo, None)
    with pytest.raises(ValueError, match="label 7"): total_loss(pred, tgt.masked_fill(tgt == 0, 7), sgo, sgb)


def test_losses_on_real_layout(realdata):
    "Components of the real Vaihingen eroded label as SGO: the one-hot truth is constant on them and changes on their outlines."
    from skimage.measure import label as cc_label
    from ssrs_nb.core import imread, get_preset
    rgb = imread(realdata / "vaihingen/gts_eroded_for_participants/top_mosaic_09cm_area1_noBoundary.tif")
    lab = np.full(rgb.shape[:2], 255, np.int64)
    for c, col in enumerate(get_preset("vaihingen").palette): lab[(rgb == col).all(-1)] = c
    comp = cc_label(lab + 1, background=256, connectivity=1)
    pad = np.pad(comp, 1, mode="edge"); H, W = comp.shape
    edge = np.zeros(comp.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)): edge |= pad[dy:dy + H, dx:dx + W] != comp
    perfect = F.one_hot(torch.from_numpy(np.where(lab == 255, 5, lab)), 6).permute(2, 0, 1)[None].float() * 20
    sgo, sgb = torch.from_numpy(comp)[None], torch.from_numpy(edge & (lab != 255))[None]
    assert object_loss(perfect, sgo, None).item() == 0.0
    assert boundary_loss(perfect, sgb).item() < 1e-4
    shifted = torch.roll(perfect, (4, 4), (2, 3))
    assert object_loss(shifted, sgo, None).item() > 1 and boundary_loss(shifted, sgb).item() > 0.3
