"""The diffusion's parts: the diffused variable, the split graph against torch, and (on the shipped residual
model) steps that change the result and a spread that follows the error."""

from __future__ import annotations

import numpy as np
import pytest

from core.schedule import NoiseSchedule, sampling_plan
from core.uncertainty import calibrated_uncertainty, local_activity

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
    assert den.split and den.metadata.features == net.feature_count
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


def test_uncertainty_scale_is_stored_and_applied(split_model, tmp_path):
    """``update_metadata`` rewrites the calibration factor in the file; the uncertainty raster is the spread times it."""
    import shutil

    from export.metadata import read_metadata
    from export.onnx_export import update_metadata
    from export.sampler import Denoiser
    from export.tiling import fuse_arrays

    path, _, _ = split_model
    calibrated = shutil.copy(path, tmp_path / "calibrated.onnx")
    update_metadata(calibrated, uncertainty_scale=3.5)
    assert read_metadata(calibrated).uncertainty_scale == 3.5 and read_metadata(path).uncertainty_scale == 1.0
    _, base, msi = _inputs(1, np.random.default_rng(5))
    kw = dict(steps=2, samples=3, tile=16, overlap=0)
    _, raw, _ = fuse_arrays(Denoiser(path, device="cpu", threads=1), base.numpy()[0], msi.numpy()[0], 1, **kw)
    _, std, _ = fuse_arrays(Denoiser(calibrated, device="cpu", threads=1), base.numpy()[0], msi.numpy()[0], 1, **kw)
    assert raw.max() > 0
    np.testing.assert_allclose(std, 3.5 * raw, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="uncertainty_scale"):
        update_metadata(calibrated, uncertainty_scale=0.0)
    update_metadata(calibrated, uncertainty_activity=0.02)
    assert read_metadata(calibrated).uncertainty_activity == 0.02 and read_metadata(calibrated).uncertainty_scale == 3.5
    mean, active, _ = fuse_arrays(Denoiser(calibrated, device="cpu", threads=1), base.numpy()[0], msi.numpy()[0], 1, **kw)
    np.testing.assert_allclose(active, calibrated_uncertainty(raw, mean, 3.5, 0.02), rtol=1e-4, atol=1e-6)
    assert (active >= std - 1e-6).all() and (active > std + 1e-6).mean() > 0.5
    with pytest.raises(ValueError, match="uncertainty_activity"):
        update_metadata(calibrated, uncertainty_activity=-1.0)


def test_calibrated_uncertainty_grows_on_edges_and_keeps_the_spread_alone_exact():
    """``c = 0`` is ``k * std`` bit for bit; with ``c > 0`` the uncertainty rises on an edge of the result and not on
    a flat area, and a nodata neighbour gives a finite value."""
    rng = np.random.default_rng(0)
    std = rng.random((2, 12, 12)).astype(np.float32) * 1e-3
    mean = np.zeros((2, 12, 12), np.float32)
    mean[:, :, 6:] = 1.0  # a vertical edge between columns 5 and 6
    assert np.array_equal(calibrated_uncertainty(std, mean, 2.5), std * np.float32(2.5))
    u = calibrated_uncertainty(std, mean, 2.5, 0.1)
    assert (u[:, :, 5:7] > 0.1).all() and np.allclose(u[:, :, :4], 2.5 * std[:, :, :4])
    mean[0, 3, 3] = np.nan
    assert np.isfinite(local_activity(mean)).all()


def test_bundled_uncertainty_follows_the_error(tmp_path):
    """On the bundled sample (a held-out crop), 4 samples at the default steps: the calibrated spread covers the
    error of the mean within +-2 std for 80-99 % of the values and ranks with it (Spearman >= 0.3)."""
    from pathlib import Path

    from core.raster_io import read_raster
    from export.superresolve import superresolve

    root = Path(__file__).resolve().parents[1]
    data, model = root / "examples" / "data", root / "models" / "hsrdiff_enmap_s2_x3.onnx"
    res = superresolve(data / "sample_lr_hsi.tif", data / "sample_hr_msi.tif", model, tmp_path / "sr.tif", samples=4,
                       uncertainty_path=tmp_path / "std.tif", device="cpu", threads=1)
    mean, _ = read_raster(res.out_path)
    std, _ = read_raster(res.uncertainty_path)
    ref, _ = read_raster(data / "sample_reference.tif")
    b = 3
    err, std = np.abs(mean - ref)[:, b:-b, b:-b], std[:, b:-b, b:-b]
    ok = np.isfinite(err) & np.isfinite(std)
    err, std = err[ok], std[ok]
    assert 0.80 <= np.mean(err <= 2 * std) <= 0.99
    ranks = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(ranks(err), ranks(std))[0, 1] >= 0.3


def test_reexport_changes_the_layout_and_nothing_else(tmp_path):
    """``python -m export.onnx_export FILE.onnx OUT.onnx [--fused]`` rebuilds the network from the file (how the
    bundled models became split): the fused and split layouts give the same samples, and the metadata is kept."""
    import dataclasses

    from core.model import build_model
    from export.metadata import read_metadata
    from export.onnx_export import export_model, main, untrained_export_info
    from export.sampler import Denoiser
    from export.tiling import fuse_arrays

    torch.manual_seed(1)
    net = build_model("tiny", C, M, residual=True, residual_scale=S, head_init_gain=1.0).eval()
    with torch.no_grad():  # every weight distinct, as a trained model's (untrained norms are all 1 and 0)
        for prm in net.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    path = export_model(net, untrained_export_info(net, scale=1, schedule=NoiseSchedule(variable="residual", variable_scale=S)),
                        tmp_path / "orig.onnx")
    assert main([str(path), str(tmp_path / "fused.onnx"), "--fused"]) == 0
    assert main([str(tmp_path / "fused.onnx"), str(tmp_path / "split.onnx")]) == 0
    metas = [read_metadata(p) for p in (path, tmp_path / "fused.onnx", tmp_path / "split.onnx")]
    assert [m.graph for m in metas] == ["split", "fused", "split"]
    plain = [dataclasses.replace(m, graph="fused", features=0, width=0) for m in metas]
    assert plain[0].to_json() == plain[1].to_json() == plain[2].to_json()
    _, base, msi = _inputs(1, np.random.default_rng(7))
    out = [fuse_arrays(Denoiser(p, device="cpu", threads=1), base.numpy()[0], msi.numpy()[0], 1, steps=3, samples=2, tile=16,
                       overlap=0)[:2] for p in (path, tmp_path / "fused.onnx", tmp_path / "split.onnx")]
    for hr, std in out[1:]:
        np.testing.assert_allclose(hr, out[0][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(std, out[0][1], atol=1e-5, rtol=0)
