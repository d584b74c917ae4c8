"""The ONNX Runtime sampler and tiling: real ORT sessions on genuine graphs, no mocks.

Most tests use a per-pixel ONNX denoiser that follows the contract (``export.testing.contract_model``),
so tiled and whole-image runs must agree to rounding; the real tiny CDFormer is used where
its behaviour matters (determinism, tiling of a non-local network).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.progress import Cancelled
from core.resample import upsample
from core.schedule import NoiseSchedule, sampling_plan
from export.metadata import ModelFileError
from export.providers import ProviderError, create_session, default_threads, gpu_provider_usable
from export.sampler import MAX_ANCESTRAL_STEPS, Denoiser, NoiseField, make_plan, reverse_diffusion, update_model_bytes
from export.testing import contract_model, make_metadata
from export.tiling import ArrayPairSource, Window, axis_spans, axis_weights, fuse_arrays, upsample_window

ROOT = Path(__file__).resolve().parents[1]
C, M, S = 5, 3, 2


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    path = contract_model(tmp_path_factory.mktemp("contract") / "contract.onnx", make_metadata(C, M, scale=S))
    return Denoiser(path, device="cpu", threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from export.testing import export_untrained

    path, _ = export_untrained(tmp_path_factory.mktemp("tiny") / "tiny.onnx", "tiny", C, M, scale=S)
    return Denoiser(path, device="cpu", threads=1)


def _arrays(rows=30, cols=41, seed=0):
    g = np.random.default_rng(seed)
    lr = g.uniform(100, 200, (C, rows, cols)).astype(np.float32)
    msi = g.uniform(0, 20, (M, rows * S, cols * S)).astype(np.float32)
    return lr, msi


# ---------------------------------------------------------------------- the update graph and providers


def test_update_graph_is_valid_onnx_and_computes_the_update():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(update_model_bytes())
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x0", "z", "noise", "base", "c_x0", "c_xt", "sigma", "c_base"]
    sess, info = create_session(update_model_bytes(), "cpu", threads=1)
    g = np.random.default_rng(1)
    x0, z, eps, base = (g.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(4))
    schedule = NoiseSchedule(variable="residual", variable_scale=0.03)
    st = sampling_plan(schedule, 10, "ancestral")[3]
    assert st.c_base == pytest.approx(-st.c_x0)
    coefs = {k: np.array([getattr(st, k)], np.float32) for k in ("c_x0", "c_xt", "sigma", "c_base")}
    got = sess.run(None, {"x0": x0, "z": z, "noise": eps, "base": base, **coefs})[0]
    ref = (np.float32(st.c_x0) * x0 + np.float32(st.c_xt) * z + np.float32(st.sigma) * eps) + np.float32(st.c_base) * base
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)
    assert info.provider == "cpu" and info.threads == 1


def test_provider_choice_is_verified():
    sess, info = create_session(update_model_bytes(), "auto", threads=1)
    assert info.provider == sess.get_providers()[0].replace("ExecutionProvider", "").lower()
    assert default_threads() >= 1
    if gpu_provider_usable("cuda"):
        pytest.skip("a usable CUDA provider exists here; the refusal path cannot be exercised")
    assert info.provider == "cpu" and not info.fell_back and "CUDA" in " ".join(info.notes)
    with pytest.raises(ProviderError, match="device 'cuda' was requested"):
        create_session(update_model_bytes(), "cuda", threads=1)
    sess, info = create_session(update_model_bytes(), "cuda", allow_fallback=True, threads=1)
    assert info.provider == "cpu" and info.fell_back and sess.get_providers() == ["CPUExecutionProvider"]
    assert "not usable" in info.describe()
    with pytest.raises(ValueError, match="device must be one of"):
        create_session(update_model_bytes(), "gpu")


# ---------------------------------------------------------------------- plan and noise


def test_plan_arguments_are_checked():
    md = make_metadata(3, 1)
    assert len(make_plan(md, MAX_ANCESTRAL_STEPS, "ancestral")) == MAX_ANCESTRAL_STEPS
    with pytest.raises(ValueError, match="at most 100 steps"):
        make_plan(md, MAX_ANCESTRAL_STEPS + 1, "ancestral")
    with pytest.raises(ValueError, match="eta"):
        make_plan(md, 10, "ddim", eta=1.5)
    with pytest.raises(ValueError, match="sampler must be"):
        make_plan(md, 10, "euler")
    assert make_plan(md, 10, "ddim", 0.0) == sampling_plan(md.schedule, 10, "ddim", 0.0)


def test_noise_field_does_not_depend_on_the_window():
    f = NoiseField(seed=7, bands=3, cell=16)
    big = f.window(1, 2, 0, 0, 70, 90)
    for r, c, h, w in [(5, 9, 20, 33), (16, 16, 16, 16), (31, 47, 39, 43), (0, 0, 1, 1)]:
        np.testing.assert_array_equal(f.window(1, 2, r, c, h, w), big[:, r:r + h, c:c + w])
    assert not np.array_equal(f.window(1, 3, 0, 0, 16, 16), big[:, :16, :16])  # other step
    assert not np.array_equal(f.window(0, 2, 0, 0, 16, 16), big[:, :16, :16])  # other sample
    assert not np.array_equal(NoiseField(8, 3, 16).window(1, 2, 0, 0, 16, 16), big[:, :16, :16])  # other seed
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05


# ---------------------------------------------------------------------- tiling geometry


@pytest.mark.parametrize("extent", [1, 7, 64, 65, 100, 224, 255, 256, 257, 300, 480, 481, 500, 1000, 4096])
@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 16), (64, 32), (256, 32)])
def test_tile_layout_covers_each_pixel_at_most_twice(extent, tile, overlap):
    spans = axis_spans(extent, tile, overlap)
    cover = np.zeros(extent, int)
    for a, b in spans:
        assert 0 <= a < b <= extent and b - a <= tile
        cover[a:b] += 1
    assert cover.min() == 1 and cover.max() <= 2
    assert [a for a, _ in spans] == sorted({a for a, _ in spans})
    for (a0, b0), (a1, _) in zip(spans[:-1], spans[1:], strict=True):
        assert b0 - a1 >= min(overlap, b0 - a0)  # at least the requested overlap
    total = np.zeros(extent)
    for (a, b), w in zip(spans, axis_weights(spans, extent), strict=True):
        assert np.all(w > 0) and np.all(w <= 1 + 1e-12)
        total[a:b] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_bad_tile_arguments():
    with pytest.raises(ValueError, match="overlap"):
        axis_spans(100, 32, 17)
    with pytest.raises(ValueError, match="tile"):
        axis_spans(100, 0, 0)


def test_windowed_upsampling_equals_whole_image():
    g = np.random.default_rng(3)
    lr = g.standard_normal((4, 13, 17)).astype(np.float32)
    lr[1, 5, 6] = np.nan
    whole = upsample(np.nan_to_num(lr), 3)
    src = ArrayPairSource(lr, np.zeros((1, 39, 51), np.float32), 3)
    for win in [(0, 0, 51, 39), (5, 7, 20, 11), (40, 30, 11, 9), (0, 38, 51, 1)]:
        up, _msi, invalid = src.read(Window(*win))
        c, r, w, h = win
        np.testing.assert_allclose(up, whole[:, r:r + h, c:c + w], atol=1e-5)
        ref_inv = np.zeros((4, 39, 51), bool)
        ref_inv[1, 15:18, 18:21] = True
        np.testing.assert_array_equal(invalid, ref_inv[:, r:r + h, c:c + w])
    # Stand-alone function: the LR reader sees only the LR pixels it needs.
    seen = []

    def read(w):
        seen.append(w)
        return np.nan_to_num(lr)[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]

    up, _ = upsample_window(read, 13, 17, 3, Window(30, 12, 9, 6))
    np.testing.assert_allclose(up, whole[:, 12:18, 30:39], atol=1e-5)
    assert seen[0].width <= 7 and seen[0].height <= 6


# ---------------------------------------------------------------------- sampling


def test_tiled_equals_whole_image_for_a_per_pixel_denoiser(contract):
    lr, msi = _arrays()
    lr[2, 4, 5] = np.nan
    msi[:, 30, 40] = np.nan
    kw = dict(steps=6, sampler="ancestral", seed=3, samples=2)
    whole, whole_std, st1 = fuse_arrays(contract, lr, msi, tile=256, overlap=0, **kw)
    assert st1.tiles == 1
    for tile, overlap in [(24, 8), (32, 16), (40, 0), (16, 8)]:
        tiled, tiled_std, st = fuse_arrays(contract, lr, msi, tile=tile, overlap=overlap, **kw)
        assert st.tiles > 4
        np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
        # Physical units are ~150 here; 1e-4 relative.
        np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-4 * 150)
        np.testing.assert_allclose(tiled_std, whole_std, atol=1e-4)
    # Nodata: the LR pixel's 2x2 block in that band, the MSI pixel in every band.
    assert np.isnan(whole[2, 8:10, 10:12]).all() and np.isfinite(whole[1, 8:10, 10:12]).all()
    assert np.isnan(whole[:, 30, 40]).all()
    assert np.isnan(whole).sum() == 4 + C


def test_seeded_runs_are_bit_identical(tiny):
    lr, msi = _arrays(12, 16)
    kw = dict(steps=4, sampler="ddim", eta=0.5, samples=2, tile=16, overlap=8)
    a, sa, _ = fuse_arrays(tiny, lr, msi, seed=11, **kw)
    b, sb, _ = fuse_arrays(tiny, lr, msi, seed=11, **kw)
    c, _, _ = fuse_arrays(tiny, lr, msi, seed=12, **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert np.abs(a - c).max() > 1e-3
    assert np.isfinite(a).all() and (sa > 0).mean() > 0.99


def test_io_binding_path_equals_plain_path(contract, tiny):
    lr, msi = _arrays(10, 12)
    for den in (contract, tiny):
        kw = dict(steps=5, sampler="ancestral", seed=2, samples=2, tile=16, overlap=4)
        a, sa, _ = fuse_arrays(den, lr, msi, io_binding=False, **kw)
        b, sb, _ = fuse_arrays(den, lr, msi, io_binding=True, **kw)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-5)


def test_real_cdformer_tiles_blend_without_seams(tiny):
    # The CDFormer's spectral attention is global over a tile, so tiles cannot equal the whole
    # image exactly; shared noise and the blending keep them close and seam-free.
    lr, msi = _arrays(24, 32, seed=5)
    kw = dict(steps=3, seed=0)
    whole, _, _ = fuse_arrays(tiny, lr, msi, tile=256, overlap=0, **kw)
    tiled, _, st = fuse_arrays(tiny, lr, msi, tile=32, overlap=16, **kw)
    assert st.tiles == 2 * 3
    rel = np.abs(tiled - whole).mean() / np.abs(whole).mean()
    assert rel < 0.02
    # No seam: the column-to-column jumps of the tiled result follow the whole-image ones,
    # at the tile borders (columns 16, 32, 48 and rows 16, 32) as elsewhere.
    for axis in (1, 2):
        d_t = np.abs(np.diff(tiled, axis=axis)).mean(axis=(0, 3 - axis))
        d_w = np.abs(np.diff(whole, axis=axis)).mean(axis=(0, 3 - axis))
        assert np.all(np.abs(d_t / d_w - 1) < 0.05)


def test_progress_and_cancel_between_steps(contract):
    lr, msi = _arrays(10, 12)
    seen = []
    fuse_arrays(contract, lr, msi, steps=4, tile=16, overlap=4, progress=lambda f, m: seen.append((f, m)))
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[0] == 0.0 and fr[-1] == 1.0
    assert any("tile 2/" in m for _, m in seen)
    assert any(m.startswith("step 3/4, tile 2/") for _, m in seen)  # the step and the tile, as the plugin shows them
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        fuse_arrays(contract, lr, msi, steps=4, tile=16, overlap=4, cancel=cancel)
    assert len(calls) == 6  # checked once before starting and after every step


def test_reverse_diffusion_samples(contract):
    lr, msi = _arrays(8, 8)
    md = contract.metadata
    lr_n = md.hsi_normalization.apply(upsample(lr, S))[None]
    msi_n = md.msi_normalization.apply(msi)[None]
    field = NoiseField(0, C)
    plan = make_plan(md, 5, "ancestral")

    def noise(s, k):
        return field.batch(s, k, [(0, 0)], 16, 16)

    one = reverse_diffusion(contract, lr_n, msi_n, plan, noise, samples=1)
    three = reverse_diffusion(contract, lr_n, msi_n, plan, noise, samples=3)
    assert one.std is None and three.std.shape == one.mean.shape and (three.std > 0).all()
    first = reverse_diffusion(contract, lr_n, msi_n, plan, noise, samples=1).mean
    np.testing.assert_array_equal(first, one.mean)  # sample 0 is the same draw
    with pytest.raises(ValueError, match="samples"):
        reverse_diffusion(contract, lr_n, msi_n, plan, noise, samples=0)


def test_band_mismatch_refused(contract):
    lr, msi = _arrays(8, 8)
    with pytest.raises(ValueError, match="takes 5 HSI and 3 MSI bands, the inputs have 4 and 3"):
        fuse_arrays(contract, lr[:4], msi)


def test_inference_path_imports_no_torch(tmp_path):
    path = contract_model(tmp_path / "c.onnx", make_metadata(C, M, scale=S))
    code = ("import sys, numpy as np\n"
            "from export.sampler import Denoiser\nfrom export.tiling import fuse_arrays\nimport export.superresolve\n"
            f"d = Denoiser({str(path)!r}, device='auto', threads=1)\n"
            f"hr, _, _ = fuse_arrays(d, np.ones(({C}, 4, 4), np.float32), np.ones(({M}, 8, 8), np.float32), steps=2)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))\n"
            "print('LOADED', bad)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout


def test_denoiser_refuses_a_wrong_file(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x08\x07" + b"\x00" * 10)
    with pytest.raises(ModelFileError, match=r"x\.onnx"):
        Denoiser(p, device="cpu")


def test_update_graph_flags_a_non_finite_x0():
    """Its ``x0_check`` output is 0 for a finite ``x0`` and NaN when any value is NaN or inf (IO-binding path)."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(update_model_bytes())
    assert [o.name for o in model.graph.output] == ["z_prev", "x0_check"]
    sess, _ = create_session(update_model_bytes(), "cpu", threads=1)
    g = np.random.default_rng(3)
    x0, z, eps = (g.standard_normal((2, 3, 4, 5)).astype(np.float32) * 1e30 for _ in range(3))
    one = np.array([1.0], np.float32)
    feeds = {"z": z, "noise": eps, "base": z, "c_x0": one, "c_xt": one, "sigma": one, "c_base": one * 0}
    assert sess.run(["x0_check"], {**feeds, "x0": x0})[0].tolist() == [[[[0.0]]]]  # large but finite: no overflow
    for bad in (np.nan, np.inf, -np.inf):
        x = x0.copy()
        x[1, 2, 3, 4] = bad
        assert np.isnan(sess.run(["x0_check"], {**feeds, "x0": x})[0]).all()
