"""Rebuilding a CDFormer from an exported ONNX model: every weight recovered, outputs equal ONNX Runtime's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from core.model.cdformer import build_model  # noqa: E402
from export.from_onnx import cdformer_from_onnx  # noqa: E402
from export.metadata import feature_names  # noqa: E402
from export.onnx_export import export_model, untrained_export_info  # noqa: E402
from export.testing import contract_model, make_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HSI, MSI = 6, 3


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _images(hsi, msi, n=1, side=32, seed=0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    img = lambda c: g.standard_normal((n, c, side, side)).astype(np.float32)  # noqa: E731
    return {"noisy": img(hsi), "noise_level": g.uniform(0.05, 0.95, n).astype(np.float32), "lr_up": img(hsi), "msi": img(msi)}


def _fused_parity(path, model, hsi, msi) -> tuple[float, float]:
    """``(max |torch - ORT|, max |torch - lr_up|)`` of the fused graph on random ``1 x C x 32 x 32`` inputs."""
    feeds = _images(hsi, msi)
    got = _session(path).run(["x0"], feeds)[0]
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("noisy", "noise_level", "lr_up", "msi"))).numpy()
    return float(np.abs(got - ref).max()), float(np.abs(ref - feeds["lr_up"]).max())


def _random_model(seed=0):
    """A tiny CDFormer whose every parameter (LayerNorms, bias tables and head included) is random."""
    torch.manual_seed(seed)
    model = build_model("tiny", HSI, MSI)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if ".norm" in name and name.endswith(".weight") else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """``{layout: path}`` of one random tiny model exported fused and split, and the model."""
    model = _random_model()
    folder = tmp_path_factory.mktemp("from_onnx")
    paths = {layout: export_model(model, untrained_export_info(model), folder / f"tiny_{layout}.onnx", split=layout == "split")
             for layout in ("fused", "split")}
    return paths, model


def _assert_same_weights(got, want):
    sg, sw = got.state_dict(), want.state_dict()
    assert list(sg) == list(sw)
    for k in sw:
        assert torch.equal(sg[k], sw[k]), k


def test_bundled_enmap_x4_matches_onnxruntime():
    """The bundled (split) x4: the rebuilt network's full forward equals the ORT denoiser (features, then a step)."""
    from export.sampler import Denoiser

    path = ROOT / "models" / "hsrdiff_enmap_s2_x4.onnx"
    model, meta = cdformer_from_onnx(path)
    assert not model.training
    assert meta["model_config"] == model.config and meta["graph"] == "split"
    feeds = _images(meta["hsi_bands"], meta["msi_bands"])
    args = [feeds[k] for k in ("noisy", "noise_level", "lr_up", "msi")]
    got = Denoiser(path, device="cpu", threads=1)(*args)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(a) for a in args)).numpy()
    assert np.abs(ref - feeds["lr_up"]).max() > 0.1  # the network's correction is large enough to mean something
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_fresh_export_round_trip(fresh, layout):
    paths, model = fresh
    got, meta = cdformer_from_onnx(paths[layout])
    assert meta["graph"] == layout
    _assert_same_weights(got, model)
    if layout == "fused":
        diff, detail = _fused_parity(paths[layout], got, HSI, MSI)
        assert detail > 0.1 and diff < 1e-4
        return
    count = meta["features"]
    f_in, f_out = feature_names(count)
    img = _images(HSI, MSI, n=2, seed=1)
    g = np.random.default_rng(2)
    feats_in = [g.standard_normal((2, meta["width"], 32, 32)).astype(np.float32) for _ in range(count)]
    feeds = {"noisy": img["noisy"], "noise_level": img["noise_level"], "base": img["lr_up"], "lr_up": img["lr_up"], "msi": img["msi"],
             **dict(zip(f_in, feats_in, strict=True))}
    x0, *feats = _session(paths[layout]).run(["x0", *f_out], feeds)
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        ref_feats = got.condition(t["lr_up"], t["msi"])
        ref_x0 = got.denoise(t["noisy"], t["noise_level"], t["base"], [torch.from_numpy(f) for f in feats_in])
    assert np.abs(x0 - ref_x0.numpy()).max() < 1e-4
    for a, b in zip(feats, ref_feats, strict=True):
        assert np.abs(a - b.numpy()).max() < 1e-4


def test_without_node_names_matches_by_structure(fresh, tmp_path):
    paths, model = fresh
    proto = onnx.load(str(paths["fused"]))
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"
    path = tmp_path / "anonymous.onnx"
    onnx.save(proto, str(path))
    got, _ = cdformer_from_onnx(path)
    _assert_same_weights(got, model)


def _rewrite(src, dst, edit) -> Path:
    proto = onnx.load(str(src))
    edit(proto.graph)
    onnx.save(proto, str(dst))
    return dst


def test_refuses_foreign_and_configless_models(tmp_path):
    foreign = contract_model(tmp_path / "foreign.onnx", None, hsi_bands=HSI, msi_bands=MSI)
    with pytest.raises(ValueError, match="foreign.onnx.*not one exported by hsr-diff"):
        cdformer_from_onnx(foreign)
    configless = contract_model(tmp_path / "configless.onnx", make_metadata(HSI, MSI))
    with pytest.raises(ValueError, match="configless.onnx.*no model_config"):
        cdformer_from_onnx(configless)


def test_refuses_unrecoverable_weights(fresh, tmp_path):
    paths, _ = fresh

    def rename_head_bias(graph):
        for init in graph.initializer:
            if init.name.endswith("head.bias"):
                old, init.name = init.name, "mystery"
        for node in graph.node:
            node.input[:] = ["mystery" if x == old else x for x in node.input]

    path = _rewrite(paths["fused"], tmp_path / "renamed.onnx", rename_head_bias)
    with pytest.raises(ValueError, match=r"renamed.onnx: cannot recover 1 of .*\(head.bias\).*not identified: mystery"):
        cdformer_from_onnx(path)

    def spoil_bias_table(graph):
        table = next(i for i in graph.initializer if len(i.dims) == 4 and i.dims[0] == 1 and i.dims[2] == i.dims[3] == 64)
        a = onnx.numpy_helper.to_array(table).copy()
        a[0, 0, 0, 0] += 1.0
        table.CopyFrom(onnx.numpy_helper.from_array(a, table.name))

    path = _rewrite(paths["fused"], tmp_path / "spoiled.onnx", spoil_bias_table)
    with pytest.raises(ValueError, match="spoiled.onnx: initialiser .* different values for one parameter element"):
        cdformer_from_onnx(path)


def test_refuses_a_split_file_of_the_earlier_layout(fresh, tmp_path):
    """A split file whose step part reads one feature fewer (the base's share of the input convolution computed at
    every step, as exported before) is refused with a message naming the way out."""
    import shutil

    from export.onnx_export import update_metadata

    paths, model = fresh
    old = shutil.copy(paths["split"], tmp_path / "earlier.onnx")
    update_metadata(old, features=len(model.sr_layers))
    with pytest.raises(ValueError, match=r"earlier.onnx: exported by an earlier hsr-diff .*checkpoint folder"):
        cdformer_from_onnx(old)


def test_refuses_float16(tmp_path):
    model = _random_model(1)
    path = export_model(model, untrained_export_info(model), tmp_path / "half.onnx", fp16=True, check=False)
    with pytest.raises(ValueError, match="half.onnx: a float16 export"):
        cdformer_from_onnx(path)
