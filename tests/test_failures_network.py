"""A damaged or mismatched network stops the run with an error naming the model, never a nodata raster.

Real ONNX graphs (the per-pixel contract denoiser of ``export.testing``, edited with the ``onnx``
package the way a damaged file would be) run on real GeoTIFFs cut from the EnMAP Potsdam scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.sampler import Denoiser, ModelOutputError, make_plan
from export.superresolve import main, superresolve
from export.testing import contract_model, make_enmap_pair, make_metadata
from export.tiling import fuse_arrays

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

BANDS = list(range(0, 224, 40))  # 6 EnMAP bands
C, M, S, STEPS = len(BANDS), 3, 4, 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_data):
    return make_enmap_pair(tmp_path_factory.mktemp("pair"), shared_data, bands=BANDS, scale=S, msi_bands=M)


@pytest.fixture(scope="module")
def metadata(pair):
    from core.normalization import BandNormalization

    hn = BandNormalization.fit(np.nan_to_num(pair["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(pair["msi_array"], nan=0.0))
    return make_metadata(C, M, scale=S, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=pair["meta"].wavelengths)


@pytest.fixture(scope="module")
def models(tmp_path_factory, metadata):
    """``good``, ``nan`` (an initializer overwritten with NaN), ``inf`` (one overwritten with inf) and
    ``late`` (finite except at the last of STEPS denoising steps)."""
    d = tmp_path_factory.mktemp("models")
    good = contract_model(d / "good.onnx", metadata)
    out = {"good": good}
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        model = onnx.load(good)
        init = next(i for i in model.graph.initializer if i.name == "k_msi")
        init.CopyFrom(numpy_helper.from_array(np.array([value], np.float32), "k_msi"))
        onnx.save(model, d / f"{name}.onnx")
        out[name] = d / f"{name}.onnx"
    # x0 + 0 * sqrt(sign * (level - threshold)): 0 while the root is real, NaN once the level crosses the threshold.
    levels = [st.noise_level for st in make_plan(metadata, STEPS, "ddim")]
    assert levels[1] != levels[2]
    threshold = 0.5 * (levels[1] + levels[2])
    sign = 1.0 if levels[1] > threshold else -1.0
    model = onnx.load(good)
    last = model.graph.node[-1]
    assert list(last.output) == ["x0"]
    last.output[0] = "x0_pre"
    model.graph.initializer.extend([numpy_helper.from_array(np.array([threshold], np.float32), "thr"),
                                    numpy_helper.from_array(np.array([sign], np.float32), "sgn"),
                                    numpy_helper.from_array(np.array([0.0], np.float32), "zero")])
    model.graph.node.extend([helper.make_node("Sub", ["lvl", "thr"], ["d"]), helper.make_node("Mul", ["d", "sgn"], ["d2"]),
                             helper.make_node("Sqrt", ["d2"], ["q"]), helper.make_node("Mul", ["q", "zero"], ["q0"]),
                             helper.make_node("Add", ["x0_pre", "q0"], ["x0"])])
    onnx.checker.check_model(model)
    onnx.save(model, d / "late.onnx")
    out["late"] = d / "late.onnx"
    return out


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())  # hidden ``.partial`` files included


def test_good_model_writes_a_finite_result(pair, models, tmp_path):
    res = superresolve(pair["lr"], pair["msi"], models["good"], tmp_path / "sr.tif", steps=STEPS, tile=32, overlap=8, threads=1)
    assert res.tiles > 1 and _files(tmp_path) == ["sr.tif"]


@pytest.mark.parametrize("kind, what", [("nan", "NaN"), ("inf", "inf")])
def test_non_finite_output_stops_the_run_naming_the_model(pair, models, tmp_path, kind, what):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelOutputError) as err:
        superresolve(pair["lr"], pair["msi"], models[kind], out / "sr.tif", steps=STEPS, tile=32, overlap=8, samples=2,
                     uncertainty_path=out / "std.tif", threads=1)
    msg = str(err.value)
    assert msg.startswith(f"model '{kind}.onnx' produced non-finite values ({what} in ")
    assert f"at step 1/{STEPS} (tile 1/" in msg and ", sample 1/2)" in msg
    assert "the file is damaged or does not match its metadata" in msg and str(models[kind]) in msg
    assert isinstance(err.value, ValueError)
    assert _files(out) == []


def test_late_non_finite_step_is_named_and_leaves_no_file(pair, models, tmp_path):
    out = tmp_path / "sr.tif"
    out.write_bytes(b"an older result")  # replaced only on success
    with pytest.raises(ModelOutputError, match=rf"model 'late\.onnx' produced non-finite values \(NaN in \d+ of \d+ values\) "
                                               rf"at step {STEPS}/{STEPS} \(tile 1/\d+\)"):
        superresolve(pair["lr"], pair["msi"], models["late"], out, steps=STEPS, tile=32, overlap=8, threads=1)
    assert _files(tmp_path) == ["sr.tif"] and out.read_bytes() == b"an older result"


def test_cli_exits_non_zero_and_writes_nothing(pair, models, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    rc = main(["--lr", str(pair["lr"]), "--msi", str(pair["msi"]), "--model", str(models["nan"]), "--out", str(out),
               "--steps", str(STEPS), "--tile", "32", "--overlap", "8", "--threads", "1", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: model 'nan.onnx' produced non-finite values (NaN in " in err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("io_binding", [False, True])
def test_both_sampler_paths_check_every_step(pair, models, io_binding):
    """The plain numpy path and the IO-binding path (its update graph's ``x0_check``) on the real pair's arrays."""
    lr = pair["lr_array"][:, :8, 1:9]
    msi = pair["msi_array"][:, :32, :32]
    den = Denoiser(models["late"], device="cpu", threads=1)
    with pytest.raises(ModelOutputError, match=rf"'late\.onnx' .* at step {STEPS}/{STEPS} \(tile 1/4\)"):
        fuse_arrays(den, lr, msi, S, steps=STEPS, tile=16, overlap=0, io_binding=io_binding, batch=1)
    good = Denoiser(models["good"], device="cpu", threads=1)
    hr, _, _ = fuse_arrays(good, lr, msi, S, steps=STEPS, tile=16, overlap=0, io_binding=io_binding)
    assert np.isfinite(hr).sum() > 0.9 * hr.size
