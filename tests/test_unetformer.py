"Tests of ssrs_nb.unetformer: parameter counts, any input size, weights files (window attention: nbs/04_unetformer)."
import os
import pickle
import socket

import pytest
import timm
import torch
import torch.nn.functional as F

from ssrs_nb.core import atomic_torch_save, image_to_tensor, imread
from ssrs_nb.unetformer import BACKBONES, UNetFormer, create_model, load_weights

RESNET18_TIMM = 11_689_512          # timm resnet18 with its 1000-class head (torchvision's published count)
REFERENCE_PARAMS = 11.72e6          # UNetFormer, ResNet-18, 6 classes (GeoSeg / the paper's baseline)
# heavy tests (SwinV2-base, ~96 M parameters) run only with SSRS_SLOW=1 (the notebooks' `slow` flag)
slow = pytest.mark.skipif(not os.environ.get("SSRS_SLOW"), reason="slow: set SSRS_SLOW=1 to run")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("resnet18", num_classes=6).eval()


# ---------------------------------------------------------------- the model
def test_parameter_count(model):
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / REFERENCE_PARAMS - 1) <= 0.01, n
    assert sum(p.numel() for p in model.backbone.parameters()) == RESNET18_TIMM - (512 * 1000 + 1000)
    assert BACKBONES["resnet18"]["decode_channels"] == 64
    assert model.decoder.b4.attn.num_heads == 8 and model.decoder.b4.attn.ws == 8


@pytest.mark.parametrize("hw", [(250, 250), (320, 320), (256, 320), (512, 768), (32, 32), (33, 47)])
def test_any_size_eval(model, hw):
    with torch.no_grad():
        out = model(torch.rand(1, 3, *hw))
    assert torch.is_tensor(out) and out.shape == (1, 6, *hw)


@pytest.mark.parametrize("hw", [(250, 250), (256, 320)])
def test_any_size_train_has_aux(hw):
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=5).train()
    main, aux = m(torch.rand(2, 3, *hw))
    assert main.shape == aux.shape == (2, 5, *hw)
    (main.mean() + aux.mean()).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert no_grad == []                              # every parameter, aux head included, gets a gradient
    m.eval()
    with torch.no_grad():
        assert torch.is_tensor(m(torch.rand(1, 3, *hw)))   # no aux in eval mode


def test_aux_head_unused_in_eval(model):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        saved = model.decoder.aux_head.conv_out[0].weight.clone()
        model.decoder.aux_head.conv_out[0].weight.mul_(-3)
        b = model(x)
        model.decoder.aux_head.conv_out[0].weight.copy_(saved)
    assert torch.equal(a, b)


def test_crop_equals_manual_pad(model):
    x = torch.rand(1, 3, 250, 250)
    with torch.no_grad():
        want = model(F.pad(x, (0, 6, 0, 6), mode="reflect"))[..., :250, :250]
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_too_small_is_a_clear_error(model):
    with pytest.raises(ValueError, match="H, W >= 32"):
        model(torch.rand(1, 3, 31, 100))


def test_channels_last_bf16(model):
    m = create_model("resnet18", 6).eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 96, 160).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
    assert y.shape == (2, 6, 96, 160) and y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_no_network_without_pretrained(monkeypatch):
    def refuse(*a, **k): raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    create_model("resnet18", 6, pretrained=None)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="neither one of"):
        create_model("resnet_does_not_exist", 6)
    with pytest.raises(ValueError, match="strides"):
        UNetFormer(6, "resnet18", out_indices=(0, 1, 2, 3))


# ---------------------------------------------------------------- weights files
def test_round_trip(model, tmp_path):
    atomic_torch_save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    torch.manual_seed(123)
    fresh = create_model("resnet18", 6, pretrained=tmp_path / "w.pth").eval()
    assert fresh.load_report["target"] == "model" and fresh.load_report["missing"] == []
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_backbone_only_timm_weights(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("resnet18", pretrained=False)
    atomic_torch_save(full.state_dict(), tmp_path / "r18.pth")
    m = create_model("resnet18", 6, pretrained=tmp_path / "r18.pth")
    assert m.load_report["target"] == "backbone"
    assert sorted(m.load_report["unexpected"]) == ["fc.bias", "fc.weight"]
    assert m.load_report["missing"] == []
    assert torch.equal(m.backbone.state_dict()["layer3.0.downsample.0.weight"], full.state_dict()["layer3.0.downsample.0.weight"])


def test_wrong_shapes(tmp_path):
    atomic_torch_save(create_model("resnet18", 7).state_dict(), tmp_path / "seven.pth")
    with pytest.raises(ValueError, match=r"seven\.pth.*wrong shape.*segmentation_head"):
        create_model("resnet18", 6, pretrained=tmp_path / "seven.pth")


@pytest.mark.parametrize("obj", [[torch.ones(2)], torch.ones(3), {"epoch": 3}, {}])
def test_not_a_state_dict(tmp_path, obj):
    atomic_torch_save(obj, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*expected a state dict"):
        create_model("resnet18", 6, pretrained=tmp_path / "bad.pth")


def test_unrelated_state_dict(tmp_path):
    atomic_torch_save({"foo.weight": torch.ones(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of its keys"):
        create_model("resnet18", 6, pretrained=tmp_path / "other.pth")


class _Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pth"):
        create_model("resnet18", 6, pretrained=tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_model("resnet18", 6, pretrained=tmp_path / "nope.pth")


def test_strict_load_reports(tmp_path):
    full = timm.create_model("resnet18", pretrained=False)
    sd = full.state_dict()
    del sd["layer4.1.bn2.weight"]
    atomic_torch_save(sd, tmp_path / "partial.pth")
    m = create_model("resnet18", 6)
    with pytest.warns(UserWarning, match="missing"):
        rep = load_weights(m, tmp_path / "partial.pth")
    assert rep["missing"] == ["layer4.1.bn2.weight"]
    with pytest.raises(ValueError, match="strict"):
        load_weights(m, tmp_path / "partial.pth", strict=True)


# ---------------------------------------------------------------- real pixels
def test_real_crop(model, realdata):
    img = imread(realdata / "vaihingen/top/top_mosaic_09cm_area1.tif")[:250, :300]
    with torch.no_grad():
        p = model(image_to_tensor(img)[None])
    assert p.shape == (1, 6, 250, 300) and torch.isfinite(p).all()


# ---------------------------------------------------------------- Swin (heavy: slow)
@slow
def test_swin_builds_and_runs(monkeypatch):
    def refuse(*a, **k): raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    torch.manual_seed(0)
    m = create_model("swin", 6).eval()
    n = sum(p.numel() for p in m.parameters())
    assert abs(n / 96e6 - 1) < 0.03, n
    assert m.nhwc and m.decoder.pre_conv[0].in_channels == 1024 and m.decoder.pre_conv[0].out_channels == 256
    with torch.no_grad():
        assert m(torch.rand(1, 3, 256, 256)).shape == (1, 6, 256, 256)
        assert m(torch.rand(1, 3, 250, 320)).shape == (1, 6, 250, 320)


@slow
def test_official_swin_format(tmp_path):
    "Backbone weights in the official Swin release layout (downsample at the end of a stage, {'model': ...})."
    name = "swinv2_tiny_window8_256"
    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False)
    official = {}
    for k, v in full.state_dict().items():
        if k.startswith("layers.") and ".downsample." in k:      # timm: start of stage i+1 -> official: end of stage i
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.", f"layers.{i - 1}.", 1)
        official[k.replace("head.fc.", "head.")] = v
    atomic_torch_save({"model": official}, tmp_path / "swin_official.pth")
    m = create_model(name, 6, pretrained=tmp_path / "swin_official.pth", out_indices=(0, 1, 2, 3),
                     backbone_kwargs=dict(dynamic_img_size=True))
    assert m.load_report["target"] == "backbone" and m.load_report["missing"] == []
    got = m.backbone.state_dict()
    assert torch.equal(got["layers_2.downsample.reduction.weight"], full.state_dict()["layers.2.downsample.reduction.weight"])
