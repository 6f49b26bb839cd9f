"Sliding-window inference and whole-tile evaluation, against naive per-window loops and hand-computed scores."
import numpy as np
import pytest
import torch
from torch import nn

from ssrs_nb.core import image_to_tensor
from ssrs_nb.inference import window_starts, coverage_count, sliding_window_predict, evaluate, predict_tiles


def naive_starts(L, w, s):
    "The official clamped starts, de-duplicated (an independent formulation of the same rule)."
    w = min(w, L)
    return sorted({min(x, L - w) for x in range(0, L, s)})


def naive_predict(model, x, C, window, stride, flips=((),)):
    model.eval(); _, H, W = x.shape
    wh, ww = min(window, H), min(window, W)
    acc, cnt = torch.zeros(C, H, W, dtype=torch.float64), torch.zeros(H, W, dtype=torch.float64)
    with torch.no_grad():
        for y in naive_starts(H, window, stride):
            for x0 in naive_starts(W, window, stride):
                for fl in flips:
                    crop = x[None, :, y:y + wh, x0:x0 + ww]
                    p = model(crop.flip(fl) if fl else crop).softmax(1)[0].double()
                    acc[:, y:y + wh, x0:x0 + ww] += p.flip(fl) if fl else p
                    cnt[y:y + wh, x0:x0 + ww] += 1
    return (acc / cnt).float()


def tiny_net(C, seed, cin=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(cin, 6, 5, padding=2), nn.Tanh(), nn.Conv2d(6, C, 3, padding=1))


@pytest.mark.parametrize("L,w,s", [(10, 4, 3), (11, 4, 3), (2000, 256, 32), (2557, 256, 32), (1024, 256, 128),
                                   (256, 256, 32), (100, 256, 32), (37, 16, 5), (1, 1, 1), (50, 7, 7)])
def test_window_starts_and_counts(L, w, s):
    st = window_starts(L, w, s)
    assert st.tolist() == naive_starts(L, w, s)
    assert st[0] == 0 and st[-1] == L - min(w, L) and len(set(st.tolist())) == len(st)
    cnt = np.zeros(L, np.int64)
    for x in st: cnt[x:x + min(w, L)] += 1
    assert np.array_equal(coverage_count(L, w, s), cnt) and cnt.min() >= 1


def test_window_starts_hand_examples():
    assert window_starts(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert coverage_count(11, 4, 3).tolist() == [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1]
    with pytest.raises(ValueError, match="window=0"): window_starts(10, 0, 3)
    with pytest.raises(ValueError, match="uncovered"): window_starts(50, 7, 8)   # the official code leaves gaps here


@pytest.mark.parametrize("H,W,C,win,st,bs,tta,flips", [
    (45, 70, 6, 32, 7, 5, False, [()]), (33, 19, 3, 24, 5, 64, True, [(), (-1,), (-2,)]),
    (64, 64, 7, 64, 32, 2, False, [()]), (97, 61, 2, 40, 13, 3, "vflip", [(), (-2,)]),
    (50, 50, 5, 32, 32, 1, ["hflip", "hvflip"], [(), (-1,), (-2, -1)])])
def test_sliding_window_equals_naive_loop(H, W, C, win, st, bs, tta, flips):
    net = tiny_net(C, H)
    g = torch.Generator().manual_seed(W)
    img = (torch.rand(H, W, 3, generator=g) * 255).to(torch.uint8).numpy()
    got = sliding_window_predict(net, img, C, window=win, stride=st, batch_size=bs, tta=tta)
    ref = naive_predict(net, image_to_tensor(img), C, win, st, flips)
    assert got.shape == (C, H, W) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_float_tensor_input_and_mode_restored():
    net = tiny_net(4, 0); net.train()
    x = torch.rand(3, 40, 52)
    got = sliding_window_predict(net, x, 4, window=32, stride=9, batch_size=4)
    assert net.training
    torch.testing.assert_close(got, naive_predict(net, x, 4, 32, 9), atol=1e-5, rtol=0)


def test_errors_name_what_was_expected():
    net = tiny_net(4, 0)
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="num_classes=3"): sliding_window_predict(net, img, 3, window=32)
    with pytest.raises(ValueError, match="H×W×3"): sliding_window_predict(net, np.zeros((4, 4)), 4)
    with pytest.raises(ValueError, match="unknown flip"): sliding_window_predict(net, img, 4, tta="rot")


class ConstantModel(nn.Module):
    "Predicts class `k` everywhere."
    def __init__(self, C, k): super().__init__(); self.C, self.k = C, k; self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x):
        out = torch.zeros(x.shape[0], self.C, *x.shape[2:]) + self.w
        out[:, self.k] = 5.0
        return out


def _constant_scores(labels, k, eval_classes, C):
    "Hand formula for a constant prediction k: IoU_k = n_k / n_valid, F1_k = 2 n_k / (n_k + n_valid), others 0."
    lab = np.concatenate([l.ravel() for l in labels]); lab = lab[lab != 255]
    n = np.bincount(lab, minlength=C).astype(float); nv = n.sum()
    iou = np.zeros(C); f1 = np.zeros(C)
    iou[k], f1[k] = n[k] / nv, 2 * n[k] / (n[k] + nv)
    present = [c for c in eval_classes if n[c] > 0 or c == k]     # classes absent from truth and prediction: NaN
    return iou, f1, np.mean(iou[present]), np.mean(f1[present])


def test_evaluate_constant_predictor_on_generated_tiles(tmp_path):
    from ssrs_nb.data import list_tiles, read_label
    from ssrs_nb.synthetic import make_synthetic_vaihingen
    make_synthetic_vaihingen(tmp_path, ids=[5, 21], size=(70, 90))
    tiles = list_tiles("vaihingen", tmp_path, "test", ids=[5, 21])
    labels = [read_label(t.label_path, "vaihingen") for t in tiles]
    s = evaluate(ConstantModel(6, 2), tiles, window=32, stride=16, progress=False)
    iou, f1, miou, mf1 = _constant_scores(labels, 2, (0, 1, 2, 3, 4), 6)
    np.testing.assert_allclose(s["iou"][2], iou[2]); np.testing.assert_allclose(s["f1"][2], f1[2])
    np.testing.assert_allclose(s["miou"], miou); np.testing.assert_allclose(s["mf1"], mf1)
    cm = np.array(s["confusion_matrix"])
    assert cm[:, [0, 1, 3, 4, 5]].sum() == 0 and cm.sum() == sum((l != 255).sum() for l in labels)
    assert s["tiles"] == [5, 21] and s["stride"] == 16
    preds = [p for _, _, p, _ in predict_tiles(ConstantModel(6, 2), tiles, window=32, stride=16)]
    assert [p.shape for p in preds] == [(70, 90)] * 2 and all((p == 2).all() for p in preds)


def test_real_vaihingen_crop(realdata):
    "Real pixels: the 512² Vaihingen crop, a random net (sliding window vs naive loop) and a constant predictor."
    from ssrs_nb.data import list_tiles, read_image, read_label
    tiles = list_tiles("vaihingen", realdata / "vaihingen", "test", ids=[1], eroded=True)
    img = read_image(tiles[0].image_path)
    net = tiny_net(6, 1)
    got = sliding_window_predict(net, img, 6, window=256, stride=128, batch_size=4)
    torch.testing.assert_close(got, naive_predict(net, image_to_tensor(img), 6, 256, 128), atol=1e-5, rtol=0)
    lab = read_label(tiles[0].label_path, "vaihingen")
    s = evaluate(ConstantModel(6, 0), tiles, window=256, stride=256, progress=False)
    iou, f1, miou, mf1 = _constant_scores([lab], 0, (0, 1, 2, 3, 4), 6)
    np.testing.assert_allclose([s["miou"], s["mf1"]], [miou, mf1])
