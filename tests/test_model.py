"""CDFormer: shapes, presets, conditioning, config round trip and a quick ONNX export check."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from core.model import PRESETS, CDFormer, build_model, count_parameters
from core.model.blocks import window_partition, window_reverse

torch.set_num_threads(1)


def _perturb(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (the head starts small, which would hide wiring errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return model


def _inputs(n=2, b=31, m=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, b, h, w, generator=g), torch.rand(n, generator=g), torch.randn(n, b, h, w, generator=g),
            torch.randn(n, m, h, w, generator=g))


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_shapes_and_dtype(preset):
    net = build_model(preset, 31, 3).eval()
    with torch.no_grad():
        y = net(*_inputs(h=16, w=24))
    assert y.shape == (2, 31, 16, 24) and y.dtype == torch.float32
    assert net.spatial_multiple == 8
    assert net.config["preset"] == preset and net.config["hsi_bands"] == 31


def test_tiny_is_tiny_and_band_counts():
    assert count_parameters(build_model("tiny", 31, 3)) < 100_000
    net = build_model("tiny", 224, 10).eval()
    with torch.no_grad():
        y = net(*_inputs(n=1, b=224, m=10, h=8, w=8))
    assert y.shape == (1, 224, 8, 8)


def test_paper_preset_size_and_forward():
    net = build_model("paper", 31, 3).eval()
    n = count_parameters(net)
    assert 30.5e6 < n < 32.5e6, n  # the paper reports 31.6M (CAVE, 31 bands)
    with torch.no_grad():
        y = net(*_inputs(n=1, h=16, w=16))
    assert y.shape == (1, 31, 16, 16)


def test_config_round_trip_is_json_and_rebuilds():
    import json

    net = build_model("tiny", 31, 3, width=24, layers=1, residual=False)
    cfg = json.loads(json.dumps(net.config))
    twin = CDFormer(cfg)
    twin.load_state_dict(net.state_dict())
    assert count_parameters(twin) == count_parameters(net) and twin.config == net.config
    with pytest.raises(ValueError):
        build_model("huge", 31, 3)
    assert set(PRESETS) == {"tiny", "small", "paper"}


def test_output_depends_on_noise_level_and_inputs():
    net = _perturb(build_model("tiny", 31, 3)).eval()
    noisy, level, lr_up, msi = _inputs()
    with torch.no_grad():
        a = net(noisy, torch.full((2,), 0.1), lr_up, msi)
        b = net(noisy, torch.full((2,), 0.9), lr_up, msi)
        c = net(noisy, torch.full((2,), 0.1), lr_up, msi + 1.0)
    assert (a - b).abs().max() > 1e-3
    assert (a - c).abs().max() > 1e-3


def test_residual_formulation_starts_near_bicubic():
    net = build_model("tiny", 31, 3).eval()
    noisy, level, lr_up, msi = _inputs()
    with torch.no_grad():
        y = net(noisy, level, lr_up, msi)
    # head initialised at 0.1x its default scale: the output is lr_up plus a small correction
    assert (y - lr_up).abs().mean() < 0.3 * lr_up.abs().mean()


def test_zero_head_returns_the_base_and_residual_scale_scales_the_correction():
    noisy, level, lr_up, msi = _inputs()
    zero = build_model("tiny", 31, 3, head_init_gain=0.0).eval()
    with torch.no_grad():
        assert torch.equal(zero(noisy, level, lr_up, msi), lr_up)
    plain = _perturb(build_model("tiny", 31, 3)).eval()
    scaled = build_model("tiny", 31, 3, residual_scale=0.01).eval()
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        d_plain = plain(noisy, level, lr_up, msi) - lr_up
        d_scaled = scaled(noisy, level, lr_up, msi) - lr_up
    assert torch.allclose(d_scaled, 0.01 * d_plain, atol=1e-6)
    assert CDFormer(scaled.config).cfg.residual_scale == 0.01


def test_window_partition_round_trip():
    x = torch.randn(2, 16, 24, 5)
    w = window_partition(x, 8)
    assert w.shape == (2 * 2 * 3, 64, 5)
    assert torch.equal(window_reverse(w, 8, 2, 16, 24), x)


def test_batch_items_are_independent():
    net = _perturb(build_model("tiny", 31, 3)).eval()
    args = _inputs(n=3)
    with torch.no_grad():
        full = net(*args)
        one = net(*(a[1:2] for a in args))
    assert torch.allclose(full[1:2], one, atol=1e-5)


@pytest.mark.parametrize("residual_scale", [1.0, 0.02])
def test_onnx_export_dynamic_shapes_matches_torch(residual_scale):
    ort = pytest.importorskip("onnxruntime")
    net = _perturb(build_model("tiny", 31, 3, residual_scale=residual_scale)).eval()
    names = ["noisy", "noise_level", "lr_up", "msi"]
    axes = {k: {0: "n", 2: "h", 3: "w"} for k in ("noisy", "lr_up", "msi", "x0")}
    axes["noise_level"] = {0: "n"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, _inputs(n=1, h=16, w=24), buf, dynamo=False, opset_version=17, input_names=names,
                          output_names=["x0"], dynamic_axes=axes)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    args = _inputs(n=2, h=32, w=40, seed=3)  # different batch and H, W than exported
    with torch.no_grad():
        ref = net(*args).numpy()
    out = sess.run(None, {k: v.numpy() for k, v in zip(names, args, strict=True)})[0]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-4
