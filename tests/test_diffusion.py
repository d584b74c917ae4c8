"""The diffusion's parts: the diffused variable, the split graph against torch, and (on the shipped residual
model) steps that change the result and a spread that follows the error."""

from __future__ import annotations

import numpy as np
import pytest

from core.schedule import NoiseSchedule, sampling_plan

torch = pytest.importorskip("torch")

C, M, P, S = 4, 2, 16, 0.05  # HSI bands, MSI bands, patch side, residual scale


@pytest.mark.parametrize("variable", ["image", "residual"])
@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ancestral", 1.0)])
def test_a_perfect_denoiser_gives_back_the_image(variable, sampler, eta):
    """Whatever the variable, a network that always returns the true image ends on it exactly (decode of X_0)."""
    sch = NoiseSchedule(variable=variable, variable_scale=S)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((C, 8, 8))
    z0 = base + S * rng.standard_normal((C, 8, 8))
    np.testing.assert_allclose(sch.decode(sch.encode(z0, base), base), z0, atol=1e-12)
    x = rng.standard_normal((C, 8, 8))
    plan = sampling_plan(sch, 7, sampler, eta)
    for st in plan:
        x = st.c_x0 * z0 + st.c_base * base + st.c_xt * x + st.sigma * rng.standard_normal(x.shape)
    assert plan[-1].c_xt == 0 and plan[-1].sigma == 0
    np.testing.assert_allclose(sch.decode(x, base), z0, atol=1e-9)


def test_schedule_variable_is_checked_and_stored():
    with pytest.raises(ValueError, match="variable"):
        NoiseSchedule(variable="latent")
    with pytest.raises(ValueError, match="variable_scale"):
        NoiseSchedule(variable="residual", variable_scale=0.0)
    sch = NoiseSchedule(variable="residual", variable_scale=0.034)
    assert NoiseSchedule.from_dict(sch.to_dict()) == sch
    assert NoiseSchedule.from_dict({"kind": "linear", "steps": 10, "beta_start": 1e-4, "beta_end": 0.02}).variable == "image"


def _inputs(n: int, rng: np.random.Generator):
    """Base, MSI and a reference ``(n, c, P, P)`` (float32 torch tensors): a smooth base plus a residual of size ``S``."""
    yy, xx = np.mgrid[0:P, 0:P] / P
    base = np.stack([np.stack([np.sin(2 * np.pi * (xx * (k + 1) * 0.5 + yy + rng.uniform())) for k in range(C)]) for _ in range(n)])
    msi = np.stack([np.stack([b[:2].mean(0), b[2:].mean(0)]) for b in base])
    z0 = base + S * rng.standard_normal(base.shape)
    return (torch.from_numpy(a.astype(np.float32)) for a in (z0, base, msi))


@pytest.fixture(scope="module")
def split_model(tmp_path_factory):
    """A tiny CDFormer (random weights) with the residual variable, exported with the split graph."""
    from core.model import build_model
    from export.onnx_export import export_model, untrained_export_info

    torch.manual_seed(0)
    sch = NoiseSchedule(variable="residual", variable_scale=S)
    net = build_model("tiny", C, M, residual=True, residual_scale=S, head_init_gain=1.0).eval()
    path = tmp_path_factory.mktemp("split") / "split.onnx"
    export_model(net, untrained_export_info(net, scale=1, schedule=sch), path)
    return path, net, sch


def test_split_graph_matches_torch(split_model):
    """The split ONNX graph's two parts equal the torch streams (features once, then a step) to < 1e-4."""
    from export.sampler import Denoiser

    path, net, _ = split_model
    den = Denoiser(path, device="cpu", threads=1)
    assert den.split and den.metadata.features == len(net.sr_layers)
    z0, base, msi = _inputs(2, np.random.default_rng(3))
    noisy, level = torch.randn_like(z0), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        feats = net.condition(base, msi)
        ref = net.denoise(noisy, level, base, feats).numpy()
    got_feats = den.features(base.numpy(), msi.numpy())
    for a, b in zip(got_feats, feats, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(den.step(noisy.numpy(), level.numpy(), base.numpy(), msi.numpy(), got_feats), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(den(noisy.numpy(), level.numpy(), base.numpy(), msi.numpy()), ref, atol=1e-4, rtol=0)
