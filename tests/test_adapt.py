"""Adapting a model to the user's pair in Super-resolve (``adapt_seconds``; ``export.adapt``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from core.model.cdformer import build_model  # noqa: E402
from core.normalization import BandNormalization  # noqa: E402
from core.progress import Cancelled  # noqa: E402
from core.raster_io import read_raster  # noqa: E402
from export.metadata import read_metadata  # noqa: E402
from export.onnx_export import export_model, untrained_export_info  # noqa: E402
from export.superresolve import superresolve  # noqa: E402
from export.testing import make_enmap_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BANDS = list(range(0, 224, 10)) + [130]
C, M, S = len(BANDS), 4, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """A real EnMAP pair at scale 2 (32 x 31 LR px) and a tiny CDFormer exported with the pair's normalisation."""
    root = tmp_path_factory.mktemp("adapt")
    p = make_enmap_pair(root, shared_data, bands=BANDS, scale=S, msi_bands=M, lr_nodata_pixel=None, msi_nodata_box=None)
    torch.manual_seed(0)
    model = build_model("tiny", C, M)
    with torch.no_grad():  # as after training: no two parameters equal (an untrained one has shared LayerNorm constants)
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.02)
    model.eval()
    hn = BandNormalization.fit(np.nan_to_num(p["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(p["msi_array"]))
    info = untrained_export_info(model, scale=S, hsi_norm=hn, msi_norm=mn, wavelengths_nm=p["meta"].wavelengths,
                                 msi_band_names=[f"MSI {i + 1}" for i in range(M)])
    p["model"] = export_model(model, info, root / "tiny.onnx")
    return p


def test_adaptation_trains_checks_and_saves_the_adapted_model(tiny, tmp_path):
    out, saved = tmp_path / "out.tif", tmp_path / "adapted.onnx"
    res = superresolve(tiny["lr"], tiny["msi"], tiny["model"], out, steps=1, adapt_seconds=10, adapted_model_path=saved)
    assert out.exists() and res.adapted_model == str(saved) and saved.exists()
    ad = read_metadata(saved).training["adaptation"]
    assert ad["steps"] >= 1 and ad["seconds"] <= 10 + 1 and ad["from"] == "tiny.onnx"
    assert ad["excluded_lr_box"] is not None  # the check's crop was kept out of training
    names = [s.name for s in res.check.scores]
    assert names[:2] == ["model", "adapted"] and res.method in names  # the model as it was is the incumbent
    assert any(n.startswith("adapted tiny.onnx to the pair") for n in res.notes)
    again = superresolve(tiny["lr"], tiny["msi"], saved, tmp_path / "again.tif", steps=1, check="off")  # reusable
    assert again.method == "model" and read_raster(tmp_path / "again.tif")[0].shape == read_raster(out)[0].shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted.onnx", "again.tif", "out.tif"]  # no temporary model


def test_a_budget_too_short_keeps_the_model(tiny, tmp_path):
    res = superresolve(tiny["lr"], tiny["msi"], tiny["model"], tmp_path / "out.tif", steps=1, adapt_seconds=1e-6,
                       adapted_model_path=tmp_path / "a.onnx", check="off")
    assert res.method == "model" and res.adapted_model is None and not (tmp_path / "a.onnx").exists()
    assert any("ended before one training step" in n for n in res.notes)


def test_cancel_during_adaptation_leaves_nothing(tiny, tmp_path):
    seen = []

    def progress(fraction, message):
        seen.append(message)

    def cancel():
        return any("adapting the model" in m for m in seen)

    with pytest.raises(Cancelled):
        superresolve(tiny["lr"], tiny["msi"], tiny["model"], tmp_path / "out.tif", steps=1, adapt_seconds=30,
                     adapted_model_path=tmp_path / "a.onnx", progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_a_pair_too_small_to_adapt_is_refused_with_its_size(tiny, tmp_path, shared_data):
    from core.raster_io import write_raster

    lr, lm = read_raster(tiny["lr"])
    msi, mm = read_raster(tiny["msi"])
    gt = list(mm.geotransform)
    lr_p = write_raster(tmp_path / "lr12.tif", lr[:, :12, 1:13], lm, geotransform=(gt[0], gt[1] * S, 0.0, gt[3], 0.0, gt[5] * S))
    msi_p = write_raster(tmp_path / "msi12.tif", msi[:, :24, :24], mm)
    with pytest.raises(ValueError, match=r"too small to adapt the model on: 12 x 12 LR px .*at least 16 x 16"):
        superresolve(lr_p, msi_p, tiny["model"], tmp_path / "out.tif", adapt_seconds=5)
    assert not (tmp_path / "out.tif").exists()
    with pytest.raises(ValueError, match="adapt_seconds > 0"):
        superresolve(lr_p, msi_p, tiny["model"], tmp_path / "out.tif", adapted_model_path=tmp_path / "a.onnx")


def test_without_torch_adaptation_names_the_install_command(tiny, tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from export.superresolve import superresolve\n"
            f"superresolve({str(tiny['lr'])!r}, {str(tiny['msi'])!r}, {str(tiny['model'])!r}, {str(tmp_path / 'o.tif')!r}, "
            "adapt_seconds=5)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0 and "pip install 'torch==2.13.0' onnx" in r.stderr
    assert not (tmp_path / "o.tif").exists()


def test_a_pair_no_bigger_than_the_check_crop_adapts_on_consistency_alone(tiny, tmp_path):
    """At 20 x 20 LR px the check's crop leaves no room for a window beside it: the whole pair is adapted on,
    without the Wald's-protocol term, and the check still runs."""
    from core.raster_io import write_raster

    lr, lm = read_raster(tiny["lr"])
    msi, mm = read_raster(tiny["msi"])
    gt = list(mm.geotransform)
    lr_p = write_raster(tmp_path / "lr20.tif", lr[:, :20, :20], lm, geotransform=(gt[0], gt[1] * S, 0.0, gt[3], 0.0, gt[5] * S))
    msi_p = write_raster(tmp_path / "msi20.tif", msi[:, :40, :40], mm)
    saved = tmp_path / "a.onnx"
    res = superresolve(lr_p, msi_p, tiny["model"], tmp_path / "out.tif", steps=1, adapt_seconds=10, adapted_model_path=saved)
    ad = read_metadata(saved).training["adaptation"]
    assert ad["steps"] >= 1 and ad["wald_term"] is False and ad["excluded_lr_box"] is None
    assert any("full-scale consistency terms only" in n for n in res.notes)
    assert [s.name for s in res.check.scores][:2] == ["model", "adapted"] and (tmp_path / "out.tif").exists()
