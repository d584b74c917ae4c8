"""ONNX export of the CDFormer: parity with torch, metadata in the file, refusal of foreign files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from core.normalization import BandNormalization  # noqa: E402
from export.metadata import METADATA_KEY, ModelFileError, ModelMetadata, metadata_from_session, read_metadata  # noqa: E402
from export.onnx_export import export_checkpoint, export_model, untrained_export_info  # noqa: E402
from export.sampler import Denoiser  # noqa: E402
from export.testing import contract_model, export_untrained, make_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HSI, MSI = 12, 4


def _inputs(n, h, w, seed=0, hsi=HSI, msi=MSI):
    g = np.random.default_rng(seed)
    return [g.standard_normal((n, hsi, h, w)).astype(np.float32), g.uniform(0.01, 1.0, n).astype(np.float32),
            g.standard_normal((n, hsi, h, w)).astype(np.float32), g.standard_normal((n, msi, h, w)).astype(np.float32)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, model = export_untrained(tmp_path_factory.mktemp("tiny") / "tiny.onnx", "tiny", HSI, MSI, scale=4)
    return path, model


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_onnx_matches_torch(preset, tiny, tmp_path):
    if preset == "tiny":
        path, model = tiny
    else:
        path, model = export_untrained(tmp_path / "small.onnx", "small", HSI, MSI, scale=4)
    den = Denoiser(path, device="cpu", threads=1)
    # Dynamic batch and spatial axes: shapes other than the traced example (16 x 16, batch 2).
    for n, h, w in [(1, 32, 48), (3, 16, 24), (2, 8, 8)]:
        feeds = _inputs(n, h, w, seed=n)
        got = den(*feeds)
        with torch.no_grad():
            ref = model(*[torch.from_numpy(a) for a in feeds]).numpy()
        assert got.shape == ref.shape == (n, HSI, h, w)
        # The network's own contribution is O(1), so this is a real check of the graph.
        assert np.abs(ref - feeds[2]).mean() > 0.05
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_metadata_round_trip_in_file(tiny):
    path, model = tiny
    md = read_metadata(path)
    assert md.hsi_bands == HSI and md.msi_bands == MSI and md.scale == 4
    assert md.spatial_multiple == model.spatial_multiple == 8
    assert md.model_config == model.config and md.preset == "tiny"
    assert md.precision == "float32" and "random" in md.training["data"]
    again = ModelMetadata.from_json(md.to_json())
    assert again.to_dict() == md.to_dict()
    # The same document through onnxruntime's session metadata and through the onnx package.
    den = Denoiser(path, device="cpu", threads=1)
    assert metadata_from_session(den.session).to_dict() == md.to_dict()
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[METADATA_KEY])["hsi_bands"] == HSI
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    assert m.opset_import[0].version == 17
    assert md.graph == "split" and md.features == model.feature_count and md.width == model.cfg.width
    f_in, f_out = [f"features_in_{k}" for k in range(md.features)], [f"features_{k}" for k in range(md.features)]
    assert [i.name for i in m.graph.input] == ["noisy", "noise_level", "base", *f_in, "lr_up", "msi"]
    assert [o.name for o in m.graph.output] == ["x0", *f_out]


def test_metadata_validation_and_versions():
    md = make_metadata(5, 3)
    d = md.to_dict()
    with pytest.raises(ValueError, match="format version 99"):
        ModelMetadata.from_dict({**d, "format_version": 99})
    with pytest.raises(ValueError, match="HSI normalisation has 5 bands, model has 6"):
        ModelMetadata.from_dict({**d, "hsi_bands": 6, "wavelengths_nm": None})
    with pytest.raises(ValueError, match="srf is"):
        make_metadata(5, 3, srf=np.ones((2, 5)))
    assert make_metadata(5, 3, srf=np.full((3, 5), 0.2)).srf_matrix.shape == (3, 5)


def test_read_metadata_refuses_foreign_corrupt_and_missing(tmp_path, shared_data):
    foreign = contract_model(tmp_path / "foreign.onnx", None, hsi_bands=5, msi_bands=3)
    with pytest.raises(ModelFileError, match=r"foreign\.onnx.*not one exported by hsr-diff"):
        read_metadata(foreign)
    other_key = contract_model(tmp_path / "otherkey.onnx", make_metadata(5, 3), key="something_else")
    with pytest.raises(ModelFileError, match=r"otherkey\.onnx.*something_else"):
        read_metadata(other_key)
    good = contract_model(tmp_path / "good.onnx", make_metadata(5, 3))
    data = good.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("this is not a model\n" * 50)
    for name in ("truncated.onnx", "random.onnx", "empty.onnx", "text.onnx"):
        with pytest.raises(ModelFileError, match=rf"{name}: not a valid ONNX model file"):
            read_metadata(tmp_path / name)
    with pytest.raises(ModelFileError, match=r"enmap_potsdam_north\.tif: not a valid ONNX"):
        read_metadata(shared_data / "enmap_potsdam_north.tif")
    with pytest.raises(ModelFileError, match=r"nothere\.onnx: no such model file"):
        read_metadata(tmp_path / "nothere.onnx")
    # Broken JSON under the right key.
    m = onnx.load(str(good))
    m.metadata_props[0].value = "{not json"
    onnx.save(m, str(tmp_path / "badjson.onnx"))
    with pytest.raises(ModelFileError, match=r"badjson\.onnx: the hsr-diff metadata is unreadable"):
        read_metadata(tmp_path / "badjson.onnx")
    # The Denoiser refuses them the same way.
    with pytest.raises(ModelFileError, match="foreign.onnx"):
        Denoiser(foreign, device="cpu")


def test_graph_that_contradicts_its_metadata_is_refused(tmp_path):
    # Metadata says 6 HSI bands, the graph takes 5.
    md = make_metadata(6, 3)
    path = contract_model(tmp_path / "liar.onnx", md, hsi_bands=5, msi_bands=3)
    with pytest.raises(ModelFileError, match=r"liar\.onnx: graph input 'noisy' has shape .* metadata says 6 bands"):
        Denoiser(path, device="cpu")


def test_reader_works_without_the_onnx_package(tiny):
    path, _ = tiny
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['torch'] = None\n"
            "from export.metadata import read_metadata; from export.sampler import Denoiser\n"
            f"md = read_metadata({str(path)!r}); d = Denoiser({str(path)!r}, device='cpu', threads=1)\n"
            "print(md.hsi_bands, d.info.provider)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(HSI), "cpu"]


def test_export_checkpoint_folder(tmp_path):
    from core.model import build_model
    from core.training.checkpoint import save_checkpoint

    torch.manual_seed(3)
    model = build_model("tiny", 6, 3).eval()
    ema = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    hn = BandNormalization(np.linspace(0, 1, 6).astype(np.float32), np.full(6, 2.0, np.float32))
    info = untrained_export_info(model, 3, hsi_norm=hn, wavelengths_nm=np.linspace(450, 700, 6))
    info["training"] = {"data": "unit test", "steps": 1}
    info["validation"] = {"psnr": 30.0}
    ckpt = save_checkpoint(tmp_path / "run", 1, model.state_dict(), ema, {"optimizer": {}}, {"model": model.config}, {}, info)
    out = export_checkpoint(tmp_path / "run", tmp_path / "m.onnx")  # a run directory resolves to its latest checkpoint
    assert ckpt.exists() and out == tmp_path / "m.onnx"
    md = read_metadata(out)
    assert md.scale == 3 and md.validation == {"psnr": 30.0} and md.training["data"] == "unit test"
    np.testing.assert_allclose(md.hsi_normalization.offset, hn.offset)
    # The export used the EMA weights.
    ref_model = build_model("tiny", 6, 3).eval()
    ref_model.load_state_dict(ema)
    feeds = _inputs(1, 16, 16, hsi=6, msi=3)
    with torch.no_grad():
        ref = ref_model(*[torch.from_numpy(a) for a in feeds]).numpy()
    np.testing.assert_allclose(Denoiser(out, device="cpu", threads=1)(*feeds), ref, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "run"]  # no temporary left


def test_failed_export_leaves_nothing(tmp_path, tiny):
    _, model = tiny
    info = untrained_export_info(model, 4)
    info["spatial_multiple"] = 4  # contradicts the model
    with pytest.raises(ValueError, match="spatial_multiple"):
        export_model(model, info, tmp_path / "bad.onnx")
    info = untrained_export_info(model, 4)
    info["hsi_bands"] = HSI + 1  # contradicts the normalisation
    with pytest.raises(ValueError, match="inconsistent model metadata"):
        export_model(model, info, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_fp16_variant(tmp_path, tiny):
    _, model = tiny
    path = export_model(model, untrained_export_info(model, 4), tmp_path / "tiny.fp16.onnx", fp16=True)
    md = read_metadata(path)
    assert md.precision == "float16"
    m = onnx.load(str(path))
    f16 = sum(len(i.raw_data) for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16)
    assert f16 > 0
    den = Denoiser(path, device="cpu", threads=1)  # float32 in and out
    feeds = _inputs(1, 16, 24)
    got = den(*feeds)
    with torch.no_grad():
        ref = model(*[torch.from_numpy(a) for a in feeds]).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-2)
