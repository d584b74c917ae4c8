"""Training: degradation parity, sampler determinism, overfitting, exact resume, checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import sensor
from core.schedule import NoiseSchedule
from core.training.checkpoint import EXPORT_INFO_KEYS, load_for_export, resolve_checkpoint
from core.training.data import build_data
from core.training.losses import degrade_spatial_torch, spectral_torch
from core.training.sampler import sample
from core.training.trainer import DEFAULTS, Trainer, apply_overrides, lr_at, merge_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cave_npz(shared_data, tmp_path_factory):
    """A 96 x 96 crop of the real CAVE balloons cube with its wavelengths, as .npz (no GDAL needed later)."""
    from core.raster_io import read_raster

    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    path = tmp_path_factory.mktemp("cave") / "balloons_crop.npz"
    extra = {"fwhm": meta.fwhm} if meta.fwhm is not None else {}
    np.savez(path, cube=cube[:, 80:176, 80:176], wavelengths=meta.wavelengths, **extra)
    return path


def _cfg(npz, run_dir, **over) -> dict:
    cfg = merge_config(DEFAULTS, {
        "name": "test", "run_dir": str(run_dir), "seed": 3, "device": "cpu",
        "model": {"preset": "tiny"},
        "data": {"mode": "supervised", "hsi": str(npz), "scale": 4, "srf": "nikon_d700", "val_region": [64, 64, 32]},
        "loss": {"w_msi": 0.1, "w_lr": 0.1},
        "optim": {"lr": 1e-3, "warmup": 2},
        "ema": {"decay": 0.9},
        "stages": [{"steps": 4, "patch": 16, "batch": 2}, {"steps": 4, "patch": 24, "batch": 2}],
        "log_every": 0, "val": {"every": 0, "steps": 3}, "checkpoint": {"every": 4, "keep": 2},
    })
    return merge_config(cfg, over)


# --------------------------------------------------------------------------- sensor parity


@pytest.mark.parametrize("scale,sigma", [(4, None), (3, None), (2, 1.3), (5, 0.8)])
def test_torch_degradation_matches_core_sensor(scale, sigma):
    rng = np.random.default_rng(scale)
    cube = rng.random((5, 8 * scale + 1, 7 * scale + 2)).astype(np.float32)  # not multiples: both crop
    psf = sensor.gaussian_psf(scale, sigma)
    ref = sensor.degrade_spatial(cube, scale, psf)
    got = degrade_spatial_torch(torch.from_numpy(cube)[None], scale, torch.from_numpy(psf))[0].numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_torch_spectral_matches_core_sensor():
    rng = np.random.default_rng(0)
    cube = rng.random((31, 6, 5)).astype(np.float32)
    r = sensor.spectral_response("nikon_d700", np.arange(400, 710, 10.0)).matrix
    np.testing.assert_allclose(spectral_torch(torch.from_numpy(cube)[None], torch.from_numpy(r))[0].numpy(),
                               sensor.degrade_spectral(cube, r), atol=1e-6)


def test_spectral_angle_loss_matches_sam_metric_and_has_finite_gradient():
    from core.metrics import sam
    from core.training.losses import spectral_angle_torch

    rng = np.random.default_rng(1)
    ref = (0.1 + rng.random((31, 8, 8))).astype(np.float32)
    est = (ref * (1 + 0.05 * rng.standard_normal(ref.shape))).astype(np.float32)
    got = float(spectral_angle_torch(torch.from_numpy(est)[None], torch.from_numpy(ref)[None]))
    assert np.degrees(got) == pytest.approx(sam(ref, est), rel=1e-3)
    a = torch.from_numpy(ref)[None].clone().requires_grad_(True)
    spectral_angle_torch(a, torch.from_numpy(ref)[None]).backward()  # identical spectra: the angle's kink
    assert torch.isfinite(a.grad).all()


# --------------------------------------------------------------------------- data


def test_data_bundle_batches_and_holdout(cave_npz):
    data = build_data(_cfg(cave_npz, "unused")["data"], seed=0)
    assert data.hsi_bands == 31 and data.msi_bands == 3 and data.srf.shape == (3, 31)
    assert data.val["ref"].shape == (31, 32, 32) and data.val["lr"].shape == (31, 8, 8)
    assert not data.scenes[0].valid[64:96, 64:96].any()
    b = data.sample_batch(np.random.default_rng(0), 3, 16)
    assert b["z0"].shape == (3, 31, 16, 16) and b["msi"].shape == (3, 3, 16, 16) and b["lr"].shape == (3, 31, 4, 4)
    # lr is the degradation of z0 (physical units) up to the crop-border padding
    phys = torch.from_numpy(data.hsi_norm.invert(b["z0"].numpy()))
    d = degrade_spatial_torch(phys, 4, torch.from_numpy(data.psf))
    lr = torch.from_numpy(data.hsi_norm.invert(b["lr"].numpy()))
    assert (d - lr)[:, :, 1:-1, 1:-1].abs().max() < 1e-4


def test_residual_scale_auto_is_the_rms_of_the_base_error(cave_npz, tmp_path):
    data = build_data(_cfg(cave_npz, "unused")["data"], seed=0)
    sc = data.scenes[0]
    d = (data.hsi_norm.apply(sc.ref) - data.hsi_norm.apply(sc.lr_up))[:, sc.valid]
    rms = data.residual_rms()
    assert rms == pytest.approx(float(np.sqrt(np.nanmean(d.astype(np.float64) ** 2))), rel=1e-6)
    assert 0 < rms < 1
    tr = Trainer(_cfg(cave_npz, tmp_path / "run", model={"preset": "tiny", "residual_scale": "auto", "head_init_gain": 0.0}), data=data)
    assert tr.model.cfg.residual_scale == pytest.approx(rms, rel=1e-4)
    b = data.sample_batch(np.random.default_rng(0), 2, 16)
    with torch.no_grad():  # zero head: the untrained model is exactly the conditioning base
        out = tr.model(b["z0"], torch.full((2,), 0.5), b["lr_up"], b["msi"])
    assert torch.equal(out, b["lr_up"])


def test_base_windows_recompute_the_base_on_each_window(cave_npz):
    from core.conditioning import base_image

    cfg = _cfg(cave_npz, "unused")["data"]
    plain = build_data(dict(cfg, base="mtf_glp_hs"), seed=0)
    data = build_data(dict(cfg, base="mtf_glp_hs", base_windows=3), seed=0)
    assert len(plain.scenes) == 1 and len(data.scenes) == 4 and data.description["base_windows"] == 3
    # statistics come from the whole scenes only
    np.testing.assert_array_equal(data.hsi_norm.scale, plain.hsi_norm.scale)
    whole = data.scenes[0]
    for sc in data.scenes[1:]:
        h, w = sc.valid.shape
        assert h % 4 == 0 and w % 4 == 0 and h >= 48 and w >= 48 and sc.valid.mean() >= 0.5
        assert np.allclose(base_image(sc.lr, sc.msi, 4, base="mtf_glp_hs"), sc.lr_up)
        assert not np.allclose(sc.lr_up, whole.lr_up[:, :h, :w]) or (h, w) == whole.valid.shape
    # the held-out crop's base is computed on the crop, as inference on it would
    v = data.val
    assert np.allclose(v["lr_up"], base_image(v["lr"], v["msi"], 4, base="mtf_glp_hs"))


def test_self_supervised_wald_pair(shared_data):
    """Real Houston LR-HSI / HR-RGB pair (ratio 4): both degraded by 4, the real HSI is the target."""
    cfg = {"mode": "self_supervised", "hsi": str(shared_data / "houston2018_hs.tif"),
           "msi": str(shared_data / "houston2018_rgb.tif"), "scale": 4, "val_region": [96, 96, 32]}
    data = build_data(cfg, seed=0)
    assert data.hsi_bands == 48 and data.msi_bands == 3 and data.srf is None
    assert data.scenes[0].ref.shape == (48, 128, 128) and data.scenes[0].lr.shape == (48, 32, 32)
    assert data.scenes[0].msi.shape == (3, 128, 128) and data.val["ref"].shape == (48, 32, 32)
    b = data.sample_batch(np.random.default_rng(0), 2, 32)
    assert b["z0"].shape == (2, 48, 32, 32) and b["lr"].shape == (2, 48, 8, 8)
    assert all(torch.isfinite(v).all() for v in b.values())


# --------------------------------------------------------------------------- sampler


def test_sampler_is_deterministic_with_seed():
    from core.model import build_model

    net = build_model("tiny", 31, 3).eval()
    g = torch.Generator().manual_seed(0)
    lr_up, msi = torch.randn(1, 31, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    sch = NoiseSchedule()
    for sampler, eta in (("ddim", 0.0), ("ddim", 1.0), ("ancestral", 0.0)):
        a = sample(net, lr_up, msi, sch, steps=4, sampler=sampler, eta=eta, seed=7)
        b = sample(net, lr_up, msi, sch, steps=4, sampler=sampler, eta=eta, seed=7)
        c = sample(net, lr_up, msi, sch, steps=4, sampler=sampler, eta=eta, seed=8)
        assert torch.equal(a, b)
        assert (a - c).abs().max() > 0
        assert torch.isfinite(a).all()


# --------------------------------------------------------------------------- learning


def test_tiny_model_overfits_one_real_patch(cave_npz):
    """Residual off, so the network itself must produce Z0: the L1 at 8 fixed noise levels falls > 10x."""
    from core.model import build_model

    torch.manual_seed(0)
    data = build_data(_cfg(cave_npz, "unused")["data"], seed=0)
    b = data.sample_batch(np.random.default_rng(1), 1, 32, augment=False)
    z0, lu, ms = b["z0"], b["lr_up"], b["msi"]
    net = build_model("tiny", 31, 3, residual=False)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sch = NoiseSchedule()
    rng = np.random.default_rng(0)
    levels = torch.linspace(0.05, 0.999, 8)
    fixed = torch.randn(8, *z0.shape[1:], generator=torch.Generator().manual_seed(1))

    def evaluate():
        with torch.no_grad():
            zt = levels[:, None, None, None] * z0 + (1 - levels**2).sqrt()[:, None, None, None] * fixed
            return float((net(zt, levels, lu.expand(8, -1, -1, -1), ms.expand(8, -1, -1, -1)) - z0).abs().mean())

    before = evaluate()
    n = 4
    for _ in range(300):
        g = torch.from_numpy(sch.sample_training_levels(rng, n))
        zt = g[:, None, None, None] * z0 + (1 - g**2).sqrt()[:, None, None, None] * torch.randn(n, *z0.shape[1:])
        loss = (net(zt, g, lu.expand(n, -1, -1, -1), ms.expand(n, -1, -1, -1)) - z0).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    print(f'overfit: {before:.4f} -> {after:.4f}')
    assert after < before / 10, (before, after)


def test_lr_schedule_warmup_and_cosine():
    cfg = merge_config(DEFAULTS, {"optim": {"lr": 1.0, "warmup": 10, "min_lr_ratio": 0.1},
                                  "stages": [{"steps": 110, "patch": 8, "batch": 1}]})
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 110) == pytest.approx(0.1)
    assert lr_at(cfg, 60) == pytest.approx(0.55)


# --------------------------------------------------------------------------- checkpoints and resume


def _weights(tr: Trainer) -> dict:
    model = {"m." + k: v.clone() for k, v in tr.model.state_dict().items()}
    return {**model, **{"e." + k: v.clone() for k, v in tr.ema.state_dict().items()}}


def test_resume_is_bit_exact(cave_npz, tmp_path):
    data = build_data(_cfg(cave_npz, tmp_path / "a")["data"], seed=3)
    straight = Trainer(_cfg(cave_npz, tmp_path / "a"), data=data)
    straight.run()
    ref = _weights(straight)

    first = Trainer(_cfg(cave_npz, tmp_path / "b"), data=build_data(_cfg(cave_npz, tmp_path / "b")["data"], seed=3))
    first.run(max_steps=4)  # "killed" right after the step-4 checkpoint
    del first
    torch.manual_seed(999)  # disturb every global RNG: resume must restore them
    np.random.seed(999)
    second = Trainer(_cfg(cave_npz, tmp_path / "b"), resume=True, data=build_data(_cfg(cave_npz, tmp_path / "b")["data"], seed=3))
    assert second.step == 4
    second.run()
    got = _weights(second)
    assert second.step == straight.step == 8
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # optimizer state too
    sa, sb = straight.opt.state_dict()["state"], second.opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_checkpoint_folder_and_load_for_export(cave_npz, tmp_path):
    cfg = _cfg(cave_npz, tmp_path / "run", val={"every": 8, "steps": 2})
    tr = Trainer(cfg)
    tr.run()
    folder = resolve_checkpoint(tmp_path / "run")
    assert folder.name == "step_00000008"
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "ema.safetensors", "optimizer.pt", "state.json", "export_info.json"}
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")]
    opt = torch.load(folder / "optimizer.pt", weights_only=True)
    assert "optimizer" in opt
    model, info = load_for_export(tmp_path / "run")
    assert set(EXPORT_INFO_KEYS) <= set(info)
    assert not model.training
    assert info["hsi_bands"] == 31 and info["msi_bands"] == 3 and info["scale"] == 4 and info["spatial_multiple"] == 8
    assert np.asarray(info["srf"]).shape == (3, 31) and len(info["wavelengths_nm"]) == 31
    assert info["msi_band_names"] == ["blue", "green", "red"]
    assert info["normalization"]["hsi"]["offset"] and info["schedule"]["steps"] == 2000
    assert info["validation"]["psnr"] > 10 and info["training"]["steps"] == 8
    for k, v in model.state_dict().items():
        assert torch.equal(v, tr.ema.state_dict()[k])
    json.dumps(info)


def test_fine_tuning_starts_from_an_exported_models_weights(cave_npz, tmp_path):
    from export.onnx_export import export_model
    from tools.train_bundled import init_from

    first = Trainer(_cfg(cave_npz, tmp_path / "a"))
    first.run()
    model, info = load_for_export(tmp_path / "a")
    onnx_path = export_model(model, info, tmp_path / "a.onnx", check=False)
    cfg = _cfg(cave_npz, tmp_path / "b", optim={"lr": 1e-3, "warmup": 2})
    init_from(cfg, onnx_path, tmp_path / "init.safetensors")
    assert cfg["model"]["residual_scale"] == info["model_config"]["residual_scale"]
    second = Trainer(cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(second.model.state_dict()[k], v), k
    assert second.export_info()["training"]["init"] == str(tmp_path / "init.safetensors")
    fresh = Trainer(_cfg(cave_npz, tmp_path / "c"))  # the same seed without init: other weights
    assert not all(torch.equal(fresh.model.state_dict()[k], v) for k, v in model.state_dict().items())
    second.run(max_steps=2)  # and it trains on from there
    assert second.step == 2
    assert any(not torch.equal(second.model.state_dict()[k], v) for k, v in model.state_dict().items())
    other = _cfg(cave_npz, tmp_path / "d", data={"val_region": [0, 0, 32]}, init=cfg["init"])  # other training pixels
    with pytest.raises(ValueError, match="normalisation"):
        Trainer(other)


def test_cli_overrides_and_run(cave_npz, tmp_path):
    cfg = apply_overrides(DEFAULTS, ["optim.lr=5e-4", "stages.0.steps=3", "data.val_region=[0, 0, 16]", "model.width=8"])
    assert cfg["optim"]["lr"] == 5e-4 and cfg["stages"][0]["steps"] == 3 and cfg["data"]["val_region"] == [0, 0, 16]
    assert cfg["model"] == {"preset": "small", "width": 8}
    from core.train import main

    run = tmp_path / "cli"
    args = ["--config", "configs/tiny.yaml", "--set", f"run_dir={run}", "--set", f"data.hsi={cave_npz}",
            "--set", "data.val_region=[64, 64, 32]", "--set", "stages=[{steps: 2, patch: 16, batch: 2}]",
            "--set", "val.every=0", "--set", "log_every=1", "--set", "device=cpu"]
    assert main(args) == 0
    assert resolve_checkpoint(run).name == "step_00000002"


def _gain_fit(recoloured: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, bool]:
    """Least-squares per-band gain of ``recoloured`` over ``window`` and whether it explains it exactly."""
    win = window.astype(np.float64)
    gain = (recoloured * win).sum(axis=(1, 2)) / np.maximum((win * win).sum(axis=(1, 2)), 1e-12)
    return gain, bool(np.allclose(recoloured, gain[:, None, None] * win, rtol=1e-4, atol=1e-6))


def test_spectral_augment_recolours_training_windows_only(cave_npz):
    from core.conditioning import base_image
    from core.training.data import random_spectral_gain

    cfg = _cfg(cave_npz, "unused")["data"]
    plain = build_data(dict(cfg, base="mtf_glp_hs"), seed=0)
    data = build_data(dict(cfg, base="mtf_glp_hs", spectral_augment=4), seed=0)
    assert len(data.scenes) == 5 and data.description["spectral_augment"] == 4
    np.testing.assert_array_equal(data.hsi_norm.scale, plain.hsi_norm.scale)  # statistics from the real scene only
    assert data.residual_rms() == pytest.approx(plain.residual_rms())
    whole = plain.scenes[0]
    r, c, size = cfg["val_region"]
    for sc in data.scenes[1:]:
        assert sc.window and sc.valid.all()
        h, w = sc.valid.shape
        assert h % 4 == 0 and w % 4 == 0
        # find the window in the scene: the recoloured reference is one gain per band times a window of it
        hits = [(i, j) for i in range(0, whole.ref.shape[1] - h + 1, 4) for j in range(0, whole.ref.shape[2] - w + 1, 4)
                if _gain_fit(sc.ref, whole.ref[:, i:i + h, j:j + w])[1]]
        assert hits, "a recoloured window is not a gain times a window of the scene"
        i, j = hits[0]
        assert not (i < r + size and i + h > r and j < c + size and j + w > c), "window touches the held-out square"
        assert not np.allclose(_gain_fit(sc.ref, whole.ref[:, i:i + h, j:j + w])[0], 1.0, atol=1e-3)
        # the pair is simulated again from the recoloured window: MSI = R ref, base recomputed on it
        np.testing.assert_allclose(sc.msi, np.einsum("mb,bij->mij", data.srf, sc.ref), rtol=1e-4, atol=1e-6)
        assert np.allclose(base_image(sc.lr, sc.msi, 4, base="mtf_glp_hs"), sc.lr_up)
    g = random_spectral_gain(np.linspace(400, 700, 31), np.random.default_rng(1))
    assert g.shape == (31,) and (g > 0).all() and np.abs(np.diff(np.log(g))).max() < 0.3  # smooth and positive


def test_degradation_augment_makes_pairs_another_way(cave_npz):
    """Each copy is a window of training pixels whose pair was made with a random degradation, not the nominal one,
    and whose base is the one inference computes for that pair; the statistics stay those of the real scene."""
    cfg = dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs")
    plain = build_data(cfg, seed=0)
    data = build_data(dict(cfg, degradation_augment=2), seed=0)
    assert data.description["degradation_augment"] == 2
    np.testing.assert_array_equal(data.hsi_norm.scale, plain.hsi_norm.scale)
    copies = [sc for sc in data.scenes if sc.window]
    assert len(copies) == 2
    for sc in copies:
        assert sc.valid.all() and sc.lr.shape[1:] == (sc.ref.shape[1] // 4, sc.ref.shape[2] // 4)
        nominal_lr = sensor.degrade_spatial(sc.ref, 4, sensor.gaussian_psf(4))
        nominal_msi = np.einsum("mb,bij->mij", data.srf, sc.ref)
        assert np.abs(sc.lr - nominal_lr).mean() > 1e-3 * np.abs(nominal_lr).mean()
        assert np.abs(sc.msi - nominal_msi).mean() > 1e-3 * np.abs(nominal_msi).mean()
        assert np.isfinite(sc.lr_up).all() and sc.lr_up.shape == sc.ref.shape


def test_a_noisy_degraded_copy_gets_the_lr_hsi_inference_would_see(cave_npz, monkeypatch):
    """A copy drawn at 30 dB has its LR-HSI denoised as Super-resolve denoises a noisy one (core.sensor.noise), and
    its base fused with the pair's PSF."""
    import dataclasses

    from core.sensor import protocols

    noisy = protocols.Degradation(snr_db=30.0, name="random")
    monkeypatch.setattr(protocols, "random_degradation", lambda rng, scale, msi_bands=16: noisy)
    data = build_data(dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs", degradation_augment=1), seed=0)
    (sc,) = [sc for sc in data.scenes if sc.window]
    clean = dataclasses.replace(noisy, snr_db=None)
    args = (sc.ref, 4, data.description["srf"], data.wavelengths, data.fwhm)
    truth = clean.apply(*args, bands=data.msi_band_names)[0]
    raw = noisy.apply(*args, bands=data.msi_band_names, rng=5)[0]
    assert np.sqrt(np.mean((sc.lr - truth) ** 2)) < 0.7 * np.sqrt(np.mean((raw - truth) ** 2))
    from core.conditioning import base_image  # and its base is fused with the pair's own PSF

    np.testing.assert_allclose(sc.lr_up, base_image(sc.lr, sc.msi, 4, "mtf_glp_hs", psf=noisy.true_psf(4).kernel))
    quiet = build_data(dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs", degradation_augment=1,
                            degradation_noise=False), seed=0)
    (sc,) = [sc for sc in quiet.scenes if sc.window]  # degradation_noise: false draws the same pair without noise
    np.testing.assert_allclose(sc.msi, clean.apply(sc.ref, *args[1:], bands=data.msi_band_names)[1], rtol=1e-5, atol=1e-6)
    assert quiet.description["degradation_noise"] is False and data.description["degradation_noise"] is True


def test_exclude_squares_are_held_out_but_not_validated(cave_npz):
    cfg = dict(_cfg(cave_npz, "unused")["data"], val_region=[0, 0, 32], exclude=[[64, 64, 32]])
    data = build_data(cfg, seed=0)
    valid = data.scenes[0].valid
    assert not valid[0:32, 0:32].any() and not valid[64:96, 64:96].any() and valid[32:64, 32:64].all()
    np.testing.assert_array_equal(data.val["ref"], data.scenes[0].ref[:, 0:32, 0:32])
    assert data.describe()["exclude"] == [[64, 64, 32]]
    ref = data.scenes[0].ref
    ref[:, 0:32, 0:32] = 1e6  # mark both squares: no training crop may contain a marked pixel
    ref[:, 64:96, 64:96] = 1e6
    rng = np.random.default_rng(0)
    for _ in range(50):
        z0 = data.sample_batch(rng, 4, 16, augment=False)["z0"]
        assert float(data.hsi_norm.invert(z0.numpy()).max()) < 1e5


def test_best_checkpoint_is_the_best_validated_step_that_beats_the_base(cave_npz, tmp_path):
    import json

    from core.training.selection import best_checkpoint, best_step, validation_records

    rec = lambda step, p, s: {"step": step, "psnr": p, "sam": s, "bicubic_psnr": 40.0, "bicubic_sam": 2.0}  # noqa: E731
    assert best_step([rec(4, 41.0, 1.9), rec(8, 42.0, 2.1), rec(12, 40.5, 1.5)]) == 4  # step 8 loses on SAM
    assert best_step([rec(4, 39.0, 1.9), rec(8, 42.0, 2.1)]) is None
    run = tmp_path / "run"
    Trainer(_cfg(cave_npz, run, val={"every": 4, "steps": 2}, checkpoint={"every": 4, "keep": 0})).run()
    recs = validation_records(run)
    assert [r["step"] for r in recs] == [4, 8]
    assert all((run / "checkpoints" / f"step_{r['step']:08d}").is_dir() for r in recs)  # keep 0 keeps them all
    # with a base that every checkpoint beats, the one with the highest PSNR is chosen
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    for x in lines:
        if "val" in x:
            x["val"].update(bicubic_psnr=0.0, bicubic_sam=90.0)
    (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    top = max(recs, key=lambda r: r["psnr"])["step"]
    assert best_checkpoint(run) == run / "checkpoints" / f"step_{top:08d}"


def test_extra_hsi_scenes_are_resampled_simulated_and_left_out_of_statistics(cave_npz, shared_data):
    """A real CASI cube (368-1043 nm, 72 bands) as extra training data for the 31-band CAVE case."""
    from core.conditioning import base_image

    cfg = dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs")
    plain = build_data(cfg, seed=0)
    data = build_data(dict(cfg, extra_hsi=[str(shared_data / "casi_gulfport.tif")]), seed=0)
    assert len(data.scenes) == 2 and data.description["extra_hsi"] == [str(shared_data / "casi_gulfport.tif")]
    np.testing.assert_array_equal(data.hsi_norm.scale, plain.hsi_norm.scale)
    assert data.residual_rms() == pytest.approx(plain.residual_rms())
    sc = data.scenes[1]
    assert sc.window and sc.ref.shape == (31, 48, 88)  # CASI's 51 x 88 cropped to the scale-4 grid
    primary = plain.scenes[0]
    assert np.percentile(sc.ref[:, sc.valid], 99) == pytest.approx(np.percentile(primary.ref[:, primary.valid], 99), rel=1e-4)
    np.testing.assert_allclose(sc.msi, np.einsum("mb,bij->mij", data.srf, sc.ref), rtol=1e-4, atol=1e-6)
    assert sc.lr.shape == (31, 12, 22) and np.allclose(base_image(sc.lr, sc.msi, 4, base="mtf_glp_hs"), sc.lr_up)
    with pytest.raises(ValueError, match="outside the source bands"):  # EnMAP has no band below 418 nm
        build_data(dict(cfg, extra_hsi=[str(shared_data / "enmap_potsdam_north.tif")]), seed=0)


def test_extra_hsi_without_wavelengths_takes_a_nominal_range(cave_npz, shared_data):
    """The Houston CASI cube has no band wavelengths: a config entry gives its range (48 bands, 380-1050 nm)."""
    cfg = dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs")
    houston = str(shared_data / "houston2018_hs.tif")
    with pytest.raises(ValueError, match="houston2018_hs.tif: extra_hsi needs band wavelengths"):
        build_data(dict(cfg, extra_hsi=[houston]), seed=0)
    with pytest.raises(ValueError, match="not both"):  # a range never overrides a file's own wavelengths
        build_data(dict(cfg, extra_hsi=[{"path": str(shared_data / "casi_gulfport.tif"), "wavelength_range": [368, 1043]}]))
    for bad in ([1050, 380], 380, ["a", "b"]):
        with pytest.raises(ValueError, match="first < last"):
            build_data(dict(cfg, extra_hsi=[{"path": houston, "wavelength_range": bad}]))
    with pytest.raises(ValueError, match="houston2018_hs.tif: .*outside the source bands"):  # micrometres, not nm
        build_data(dict(cfg, extra_hsi=[{"path": houston, "wavelength_range": [0.38, 1.05]}]))
    data = build_data(dict(cfg, extra_hsi=[{"path": houston, "wavelength_range": [380, 1050]}]), seed=0)
    assert data.description["extra_hsi"] == [houston] and data.scenes[1].ref.shape == (31, 128, 128)
    # resampled with centres every 670/47 nm: the 400-700 nm CAVE bands are weighted sums of Houston bands 2-24
    from core.raster_io import read_raster

    cube, _ = read_raster(houston)
    wl = np.linspace(380, 1050, 48)
    w = sensor.band_resampling_matrix(wl, data.wavelengths, None, data.fwhm)
    expected = np.einsum("tb,bij->tij", w, cube)
    expected *= np.percentile(data.scenes[1].ref, 99) / np.percentile(expected, 99)
    np.testing.assert_allclose(data.scenes[1].ref, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_band_weighting_counts_relative_errors(cave_npz, tmp_path):
    from core.training.losses import band_weights_from_residual

    w = band_weights_from_residual(np.array([0.04, 0.01, 0.02, 1e-6]))
    assert w.mean() == pytest.approx(1.0) and w[1] > w[2] > w[0]  # inverse to the base's residual
    assert w[3] / np.median(w) == pytest.approx(5.0) and w.min() > 0  # a near-perfect band cannot take the whole loss
    data = build_data(dict(_cfg(cave_npz, "unused")["data"], base="mtf_glp_hs"), seed=0)
    rms = data.band_residual_rms()
    assert rms.shape == (data.hsi_bands,) and np.sqrt(np.mean(rms**2)) == pytest.approx(data.residual_rms(), rel=1e-6)
    tr = Trainer(_cfg(cave_npz, tmp_path / "run", loss={"band_weighting": "residual"}), data=data)
    bw = tr.loss_fn.band_w.flatten().numpy()
    np.testing.assert_allclose(bw, band_weights_from_residual(rms), rtol=1e-5)
    x0 = torch.zeros(1, data.hsi_bands, 8, 8)
    x0_hat = torch.ones_like(x0) * torch.arange(data.hsi_bands, dtype=torch.float32).reshape(1, -1, 1, 1)
    total, parts = tr.loss_fn(x0_hat, x0)
    err = np.arange(data.hsi_bands, dtype=np.float64)
    assert float(parts["l1"]) == pytest.approx(err.mean(), rel=1e-5)  # logged L1 unweighted
    assert float(total) == pytest.approx((err * bw).mean(), rel=1e-5)  # optimised L1 weighted
    with pytest.raises(ValueError, match="band_weighting"):
        Trainer(_cfg(cave_npz, tmp_path / "bad", loss={"band_weighting": "inverse"}), data=data)
