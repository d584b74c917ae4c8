"""Training on a real pair of any size: patches that adapt, a held-out square inside the pair, a time budget.

The pairs are made from the real HYDICE DC Mall cube (100 x 100 px; every 6th band, 32 bands): the LR-HSI
is its Gaussian-PSF degradation by 4, the HR-MSI four broad bands (band averages), both with 40 dB noise,
written as GeoTIFFs whose pixel sizes are 4 and 1 map units, like a real co-registered pair.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from core import sensor
from core.raster_io import read_raster, write_raster
from core.training.data import auto_val_region, build_data, crop_positions, largest_patch
from core.training.trainer import Trainer, merge_config, resize_schedule, total_steps

torch.set_num_threads(1)

SCALE = 4


def _pair(shared_data, folder, lr_side: int, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[str, str]:
    """``(LR-HSI path, HR-MSI path)``: a ``lr_side x lr_side`` LR-HSI and its ``4 lr_side`` px HR-MSI, each LR
    pixel's footprint ``shift`` HR px off its block's centre."""
    cube, _ = read_raster(shared_data / "hydice_dcmall.tif")
    hr = cube[::6, : lr_side * SCALE, : lr_side * SCALE].astype(np.float32)
    srf = np.zeros((4, hr.shape[0]), np.float32)
    for k, idx in enumerate(np.array_split(np.arange(hr.shape[0]), 4)):
        srf[k, idx] = 1.0 / len(idx)
    lr, msi = sensor.simulate_pair(hr, SCALE, srf, psf=sensor.gaussian_psf(SCALE, shift=shift), snr_db=40, seed=0)
    lr_path, msi_path = folder / f"lr_{lr_side}_{shift[0]}.tif", folder / f"msi_{lr_side}_{shift[0]}.tif"
    write_raster(lr_path, lr, geotransform=(0.0, float(SCALE), 0.0, 0.0, 0.0, -float(SCALE)),
                 wavelengths=np.linspace(400.0, 2500.0, hr.shape[0]))
    write_raster(msi_path, msi, geotransform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return str(lr_path), str(msi_path)


@pytest.fixture(scope="module")
def pair25(shared_data, tmp_path_factory):
    return _pair(shared_data, tmp_path_factory.mktemp("pair25"), 25)


def _records(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x.strip()]


def test_a_25x25_pair_trains_with_the_patch_reduced_and_exports_the_best_validated_step(pair25, tmp_path):
    from core.jobs.train import train_files
    from core.training.selection import best_step, validation_records
    from export.metadata import read_metadata

    lines: list[str] = []
    res = train_files(tmp_path / "m.onnx", tmp_path / "ckpt", SCALE, lr_hsi=pair25[0], hr_msi=pair25[1], preset="tiny",
                      iterations=6, batch=1, lr_name="AVIRIS-like LR", msi_name="S2-like MSI", log=lines.append)
    log = "\n".join(lines)
    note = next(x for x in lines if x.startswith("patch 64 -> "))
    for part in ("patch 64 -> 16", "24 x 24 px", "LR-HSI layer 'AVIRIS-like LR' is 25 x 25 px",
                 "HR-MSI layer 'S2-like MSI' 100 x 100 px", "held-out validation square", "32 -> 8"):
        assert part in note, note
    assert res.steps == 6 and (tmp_path / "m.onnx").is_file()
    cfg = json.loads((tmp_path / "ckpt" / "checkpoints" / "step_00000006" / "config.json").read_text())
    assert [st["patch"] for st in cfg["stages"]] == [8, 16]
    # validated on the held-out square; the exported step is the selection's choice
    recs = validation_records(tmp_path / "ckpt")
    assert recs and all(r["crop"] == recs[0]["crop"] for r in recs)
    assert res.selected_step == best_step(recs)
    exported = read_metadata(tmp_path / "m.onnx").training["steps"]
    assert exported == (res.selected_step if res.selected_step is not None else res.steps)
    assert ("exporting step" in log) == (res.selected_step is not None)
    # The check scores it by Wald's protocol, the task it learned: MTF-GLP-HS is the incumbent it must beat on both
    # Wald PSNR and SAM (6 steps from a zero head leave it at its base, so it does not)
    from export.superresolve import superresolve

    sr = superresolve(pair25[0], pair25[1], tmp_path / "m.onnx", tmp_path / "sr.tif", steps=1)
    assert sr.check.scores[0].name == "mtf_glp_hs" and sr.method == "mtf_glp_hs", sr.notes
    assert any("was trained on Wald's protocol" in n for n in sr.notes), sr.notes


def test_a_pair_below_16x16_lr_pixels_is_refused_naming_its_sizes(shared_data, tmp_path):
    from core.jobs.train import train_files

    lr, msi = _pair(shared_data, tmp_path, 12)
    with pytest.raises(ValueError) as err:
        train_files(tmp_path / "m.onnx", tmp_path / "ckpt", SCALE, lr_hsi=lr, hr_msi=msi, preset="tiny", iterations=4,
                    lr_name="tiny LR", msi_name="tiny MSI")
    msg = str(err.value)
    for part in ("too small", "LR-HSI layer 'tiny LR' is 12 x 12 px", "HR-MSI layer 'tiny MSI' 48 x 48 px",
                 "at least 16 x 16 LR pixels"):
        assert part in msg, msg
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "m.onnx").exists()


def test_no_patch_beside_the_held_out_square_names_it_and_the_largest_crop(pair25, tmp_path):
    from core.jobs.train import training_config

    cfg = training_config(tmp_path / "run", SCALE, lr_hsi=pair25[0], hr_msi=pair25[1], preset="tiny", iterations=4,
                          val_region=[4, 4, 16])
    with pytest.raises(ValueError) as err:
        Trainer(cfg)
    msg = str(err.value)
    for part in ("no training patch fits", "24 x 24 px", "25 x 25 px", "100 x 100 px", "[row 4, col 4, size 16]",
                 "largest square crop of training pixels is 4 x 4 px", "smallest patch 8 x 8"):
        assert part in msg, msg


def test_the_auto_held_out_square_is_inside_the_pair_and_never_in_a_training_crop(pair25):
    data = build_data({"mode": "self_supervised", "hsi": pair25[0], "msi": pair25[1], "scale": SCALE,
                       "val_region": "auto"}, patch=64)
    r, c, size = data.describe()["val_region"]
    sc = data.scenes[0]
    h, w = sc.valid.shape
    assert (h, w) == (24, 24) and data.describe()["val_region_auto"]
    assert 0 <= r and r + size <= h and 0 <= c and c + size <= w and size % 8 == 0 and r % SCALE == 0 and c % SCALE == 0
    assert not sc.valid[r : r + size, c : c + size].any() and sc.valid.sum() == h * w - size * size
    np.testing.assert_array_equal(data.val["ref"], sc.ref[:, r : r + size, c : c + size])  # validated on
    # against the pair's own base, as Super-resolve computes it over the whole pair (not on the square alone)
    np.testing.assert_array_equal(data.val["lr_up"], sc.lr_up[:, r : r + size, c : c + size])
    assert largest_patch(sc.valid, SCALE, 8) == 16  # training patches still fit beside it
    sc.ref[:, r : r + size, c : c + size] = 1e6  # mark the square: no training crop may hold a marked pixel
    rng = np.random.default_rng(0)
    for patch in (8, 16):
        for _ in range(40):
            z0 = data.sample_batch(rng, 4, patch)["z0"]
            assert float(data.hsi_norm.invert(z0.numpy()).max()) < 1e5


def test_walds_protocol_degrades_a_misregistered_pair_by_its_estimated_psf(shared_data, tmp_path):
    """A pair 0.75 HR px off: the reduced-scale pair is made with the estimated, shifted PSF, so its MSI lies on the
    LR-HSI's footprints and the MTF-GLP-HS base is nearer its target than with the nominal centred PSF."""
    from core.metrics import psnr

    lr, msi = _pair(shared_data, tmp_path, 25, shift=(0.75, 0.75))
    cfg = {"mode": "self_supervised", "hsi": lr, "msi": msi, "scale": SCALE, "val_region": None, "base": "mtf_glp_hs"}
    est, nominal = (build_data(cfg | {"degradation": d}, patch=16) for d in ("estimate", "model"))
    assert "offset dy +0.7" in est.describe()["degradation"] and "dx +0.7" in est.describe()["degradation"]
    assert nominal.describe()["degradation"] is None
    rows = np.arange(est.psf.shape[0]) - (est.psf.shape[0] - 1) / 2
    assert abs(float((est.psf.sum(axis=1) * rows).sum()) - 0.75) < 0.05  # the kernel's centroid, HR px
    assert np.array_equal(nominal.psf, sensor.gaussian_psf(SCALE).astype(np.float32))
    gains = [psnr(d.scenes[0].ref, d.scenes[0].lr_up) for d in (est, nominal)]
    assert gains[0] > gains[1] + 1.0, gains


def test_the_checks_crop_is_held_out_of_training_on_the_pair(shared_data, pair25):
    """Super-resolve's check scores a model trained on the pair by Wald's protocol on one crop: that crop (the same
    :func:`core.referee.check_crop` on the same common area) is never in a training crop, nor in the validation square;
    on a pair too small to train beside it, it is not held out and the data says why."""
    from core.raster_io import read_raster
    from core.referee import check_crop

    hs, rgb = str(shared_data / "houston2018_hs.tif"), str(shared_data / "houston2018_rgb.tif")
    data = build_data({"mode": "self_supervised", "hsi": hs, "msi": rgb, "scale": SCALE, "val_region": "auto",
                       "hold_out_check_crop": True}, patch=16)
    lr, msi = read_raster(hs)[0], read_raster(rgb)[0]
    got, small = check_crop(lambda r, c, h, w: lr[:, r:r + h, c:c + w], lambda r, c, h, w: msi[:, r:r + h, c:c + w],
                            lr.shape[1:], SCALE)
    r, c, size = data.describe()["check_crop"]
    assert not small and (r, c, size) == (got[0], got[1], got[2].shape[1]) and size >= 32
    sc = data.scenes[0]
    assert not sc.valid[r:r + size, c:c + size].any() and sc.valid.sum() > 0.5 * sc.valid.size
    vr, vc, vs = data.describe()["val_region"]
    assert vr + vs <= r or r + size <= vr or vc + vs <= c or c + size <= vc  # the validation square lies beside it
    sc.ref[:, r:r + size, c:c + size] = 1e9
    rng = np.random.default_rng(0)
    for _ in range(40):
        assert float(data.hsi_norm.invert(data.sample_batch(rng, 4, 16)["z0"].numpy()).max()) < 1e8
    small_pair = build_data({"mode": "self_supervised", "hsi": pair25[0], "msi": pair25[1], "scale": SCALE,
                             "val_region": "auto", "hold_out_check_crop": True}, patch=16)
    assert small_pair.describe()["check_crop"].startswith("not held out: the check's crop [row 0, col 0, size 24]")


def test_no_auto_square_when_it_would_take_the_whole_grid():
    assert auto_val_region(np.ones((24, 24), bool), 3, 24) is None  # the smallest square (24 px) is all of it
    assert auto_val_region(np.ones((48, 48), bool), 3, 24) is not None


def test_auto_square_size_and_place():
    """About a quarter of the valid area, smaller when the patch would not fit beside it, on valid pixels only."""
    full = np.ones((96, 96), bool)
    assert auto_val_region(full, 4, 8, patch=16) == [48, 48, 48]  # 25 % of the area, bottom-right corner
    r, c, size = auto_val_region(full, 4, 8, patch=64)  # 48 would leave 48 px: shrunk until 64 fits
    assert size == 32 and largest_patch(_without(full, r, c, size), 4, 8, 64) == 64
    holed = full.copy()
    holed[60:, 60:] = False  # nodata in the bottom-right corner: the square goes to another corner
    r, c, size = auto_val_region(holed, 4, 8, patch=16)
    assert holed[r : r + size, c : c + size].all() and size % 8 == 0
    assert auto_val_region(np.zeros((32, 32), bool), 4, 8) is None
    # beside the 48 px corner square, 48 px crops start on its top rows or left columns: 13 + 13 - 1 places
    assert len(crop_positions(_without(full, 48, 48, 48), 48, 4)) == 25


def _without(valid, r, c, size):
    out = valid.copy()
    out[r : r + size, c : c + size] = False
    return out


def test_resize_schedule_keeps_the_stage_shares_and_a_tenth_of_the_run():
    from core.training.trainer import DEFAULTS

    cfg = merge_config(DEFAULTS, {"stages": [{"steps": 1200, "patch": 8, "batch": 2}, {"steps": 800, "patch": 16, "batch": 1}],
                                  "optim": {"warmup": 200}, "log_every": 40, "val": {"every": 200},
                                  "checkpoint": {"every": 200}})
    out = resize_schedule(cfg, 50)
    assert [st["steps"] for st in out["stages"]] == [30, 20] and total_steps(out) == 50
    assert out["optim"]["warmup"] == 5 and out["val"]["every"] == 5 and out["checkpoint"]["every"] == 5
    assert out["log_every"] == 1 and cfg["stages"][0]["steps"] == 1200  # the input is left alone


def test_a_budget_run_stops_in_time_and_exports_a_model_that_loads(pair25, tmp_path):
    import onnxruntime as ort

    from core.jobs.train import train_files

    budget = 10.0
    stamps: list[tuple[float, str]] = []
    t0 = time.time()
    res = train_files(tmp_path / "m.onnx", tmp_path / "ckpt", SCALE, lr_hsi=pair25[0], hr_msi=pair25[1], preset="tiny",
                      seconds=budget, batch=2, log=lambda line: stamps.append((time.time(), line)))
    total = time.time() - t0
    plan = next(line for _, line in stamps if line.startswith("time budget 10 s: "))
    planned = int(plan.split(": ")[1].split()[0])
    trained_by = max(t for t, line in stamps if line.startswith(("step ", "  val step", "time budget spent"))) - t0
    assert trained_by <= budget + 1.0, (trained_by, plan)  # training ends within the budget
    assert total <= budget + 20.0  # the ONNX export follows
    assert 2 <= res.steps <= planned
    cfg = json.loads((tmp_path / "ckpt" / "checkpoints" / f"step_{res.steps:08d}" / "config.json").read_text())
    steps = [st["steps"] for st in cfg["stages"]]
    assert sum(steps) == planned and abs(steps[0] - 0.6 * planned) <= 1  # the schedule is sized to the budget
    assert cfg["budget_s"] == budget and cfg["val"]["every"] == cfg["checkpoint"]["every"] == max(planned // 10, 1)
    assert any("val" in rec for rec in _records(tmp_path / "ckpt"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()


def test_a_budget_too_short_for_one_validated_step_is_refused_before_anything_is_written(pair25, tmp_path):
    from core.jobs.train import train_files

    with pytest.raises(ValueError, match=r"time budget of 0.2 s is too short for one validated training step.*give at least"):
        train_files(tmp_path / "m.onnx", tmp_path / "ckpt", SCALE, lr_hsi=pair25[0], hr_msi=pair25[1], preset="tiny",
                    seconds=0.2, batch=1)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "m.onnx").exists()


def test_the_cli_refuses_a_small_pair_and_a_bad_budget(shared_data, tmp_path, capsys):
    from core.jobs.train import main

    lr, msi = _pair(shared_data, tmp_path, 12)
    args = ["--lr-hsi", lr, "--hr-msi", msi, "--scale", "4", "--model", str(tmp_path / "m.onnx"),
            "--checkpoints", str(tmp_path / "ckpt"), "--preset", "tiny"]
    assert main([*args, "--seconds", "30"]) == 1
    assert "too small to train on" in capsys.readouterr().err
    assert main([*args, "--seconds", "-1"]) == 1
    assert "time budget must be positive" in capsys.readouterr().err


def test_the_train_algorithm_has_a_time_budget_parameter(qgis_app):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("hsrdiff:train")
    p = alg.parameterDefinition("TRAIN_SECONDS")
    assert p is not None and p.defaultValue() == 0 and p.minimum() == 0
    assert "0 = use the iterations" in p.description()


def test_the_train_algorithm_estimates_the_pairs_degradation_by_default(qgis_app, pair25, tmp_path):
    """B (a real pair) degrades the pair by its estimated PSF unless asked for the nominal one; the log says which."""
    import processing
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("hsrdiff:train")
    p = alg.parameterDefinition("DEGRADATION")
    assert p is not None and p.defaultValue() == 0 and p.options()[0].startswith("Estimate from the pair")
    for choice, said in ((0, "the nominal one (the estimate matches it)"), (1, None)):
        ckpt = tmp_path / f"ckpt{choice}"
        processing.run("hsrdiff:train", {"LR_HSI": pair25[0], "HR_MSI": pair25[1], "SCALE": SCALE, "PRESET": 0, "SENSOR": None,
                                         "ITERATIONS": 2, "BATCH": 1, "DEGRADATION": choice,
                                         "MODEL": str(tmp_path / f"m{choice}.onnx"), "CHECKPOINTS": str(ckpt)})
        info = json.loads((ckpt / "checkpoints" / "step_00000002" / "export_info.json").read_text())
        assert info["training"]["data"]["degradation"] == said
    with pytest.raises(Exception, match=r"HR-MSI layer '.*' has 4 bands but the sensor response 'sentinel2' has 10"):
        processing.run("hsrdiff:train", {"LR_HSI": pair25[0], "HR_MSI": pair25[1], "SCALE": SCALE, "PRESET": 0,
                                         "SENSOR": 0, "ITERATIONS": 2, "MODEL": str(tmp_path / "s2.onnx"),
                                         "CHECKPOINTS": str(tmp_path / "ckpt_s2")})


def test_a_model_trained_on_a_pair_too_small_to_hold_the_checks_crop_out_does_not_compete(pair25, tmp_path):
    """The check's crop of a 25 x 25 LR px pair is the whole pair: the model would be checked on what it trained on,
    so it is not offered (MTF-GLP-HS is written instead), whatever its validation square said."""
    from export.adapt import train_on_pair

    lines: list[str] = []
    path, compete = train_on_pair(pair25[0], pair25[1], 15, tmp_path, log=lines.append)
    assert path.is_file() and not compete
    assert any("too small to hold the check's crop out of training" in x for x in lines), lines


def test_an_estimated_psf_width_at_the_edge_of_the_search_is_kept_with_a_warning(shared_data, tmp_path):
    """The real Houston pair: the width reaches the top of the widths searched (1.2 x scale); the estimate is used and a
    note names both layers and says the pair fits no PSF well. A pair 0.75 HR px off with the nominal width gets none."""
    from core.jobs.common import estimate_degradation

    def estimate(lr_path, msi_path):
        lr, msi = read_raster(lr_path)[0], read_raster(msi_path)[0]
        return estimate_degradation(lambda r, c, h, w: lr[:, r:r + h, c:c + w], lambda r, c, h, w: msi[:, r:r + h, c:c + w],
                                    lr.shape[1:], SCALE, "Houston HS", "Houston RGB")

    reg, notes = estimate(shared_data / "houston2018_hs.tif", shared_data / "houston2018_rgb.tif")
    assert reg is not None and reg.sigma > 0.99 * 1.2 * SCALE
    assert len(notes) == 1 and "'Houston HS' / 'Houston RGB'" in notes[0] and "edge of the widths searched" in notes[0]
    reg, notes = estimate(*_pair(shared_data, tmp_path, 25, shift=(0.75, 0.75)))
    assert reg is not None and abs(reg.dy - 0.75) < 0.05 and notes == []
