"""Training: the scale of a real pair, resuming a changed configuration, one log record per step."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from core.raster_io import read_raster, write_raster
from core.training.checkpoint import ResumeMismatch, resolve_checkpoint
from core.training.data import build_data, check_pair_scale
from core.training.trainer import DEFAULTS, Trainer, merge_config

torch.set_num_threads(1)

HS, RGB = "houston2018_hs.tif", "houston2018_rgb.tif"


@pytest.fixture(scope="module")
def cave_tif(shared_data, tmp_path_factory):
    """A 96 x 96 GeoTIFF crop of the real CAVE balloons cube (31 bands, wavelengths kept)."""
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    path = tmp_path_factory.mktemp("cave") / "balloons_crop.tif"
    write_raster(path, cube[:, 80:176, 80:176], meta)
    return path


def _cfg(hsi, run_dir, **over) -> dict:
    cfg = merge_config(DEFAULTS, {
        "name": "resume", "run_dir": str(run_dir), "seed": 5, "device": "cpu",
        "model": {"preset": "tiny"},
        "data": {"mode": "supervised", "hsi": str(hsi), "scale": 4, "srf": "nikon_d700", "val_region": [64, 64, 32]},
        "loss": {"w_msi": 0.1, "w_lr": 0.1},
        "optim": {"lr": 1e-3, "warmup": 2},
        "ema": {"decay": 0.9},
        "stages": [{"steps": 8, "patch": 16, "batch": 2}],
        "log_every": 0, "val": {"every": 0, "steps": 2}, "checkpoint": {"every": 4, "keep": 2},
    })
    return merge_config(cfg, over)


def _wald_cfg(shared_data, run_dir, scale: int, lr=None, msi=None) -> dict:
    data = {"mode": "self_supervised", "hsi": str(lr or shared_data / HS), "msi": str(msi or shared_data / RGB), "scale": scale,
            "srf": None, "val_region": [96, 96, 32]}
    return merge_config(_cfg("unused", run_dir), {"data": data, "loss": {"w_msi": 0.0, "w_lr": 0.1},
                                                  "stages": [{"steps": 2, "patch": 16, "batch": 1}], "checkpoint": {"every": 0}})


def _records(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- the pair's scale


def test_wald_training_refuses_a_scale_other_than_the_pairs_ratio(shared_data, tmp_path):
    """Real Houston pair (4 x 4 vs 1 x 1 map units per pixel): scale 4 trains, scale 2 is refused naming both files."""
    assert check_pair_scale(shared_data / HS, shared_data / RGB, 4) == 4
    tr = Trainer(_wald_cfg(shared_data, tmp_path / "ok", 4))
    tr.run()
    assert tr.step == 2 and resolve_checkpoint(tmp_path / "ok").name == "step_00000002"
    with pytest.raises(ValueError) as err:
        Trainer(_wald_cfg(shared_data, tmp_path / "bad", 2))
    msg = str(err.value)
    for part in (f"LR-HSI layer '{HS}'", f"HR-MSI layer '{RGB}'", "pixel-size ratio is 4 ", "requested scale is 2",
                 "set the scale to 4"):
        assert part in msg, msg
    assert not (tmp_path / "bad").exists()


def test_wald_pair_ratio_comes_from_the_geotransforms_then_from_the_sizes(shared_data, tmp_path):
    lr, lm = read_raster(shared_data / HS)
    msi, mm = read_raster(shared_data / RGB)
    # The same pixels with an MSI of 2-unit pixels: the geotransforms say 2, whatever the sizes say.
    write_raster(tmp_path / "msi_2m.tif", msi, mm, geotransform=(0.0, 2.0, 0.0, 0.0, 0.0, -2.0))
    with pytest.raises(ValueError, match=r"pixel-size ratio is 2 .*'msi_2m.tif': 2 x 2 map units.* requested scale is 4"):
        check_pair_scale(shared_data / HS, tmp_path / "msi_2m.tif", 4)
    assert check_pair_scale(shared_data / HS, tmp_path / "msi_2m.tif", 2) == 2
    # Without a georeference (.npy) the sizes give the ratio: 512 / 128.
    np.save(tmp_path / "lr.npy", lr)
    np.save(tmp_path / "msi.npy", msi)
    assert check_pair_scale(tmp_path / "lr.npy", tmp_path / "msi.npy", 4) == 4
    with pytest.raises(ValueError, match=r"size ratio is 4 .*128 x 128.*512 x 512 pixels.*requested scale is 3"):
        build_data(_wald_cfg(shared_data, tmp_path, 3, lr=tmp_path / "lr.npy", msi=tmp_path / "msi.npy")["data"])


def test_train_job_checks_the_pair_before_writing_anything(shared_data, tmp_path):
    from core.jobs.train import train_files

    with pytest.raises(ValueError) as err:
        train_files(tmp_path / "m.onnx", tmp_path / "ckpt", 3, lr_hsi=str(shared_data / HS), hr_msi=str(shared_data / RGB),
                    lr_name="Houston CASI", msi_name="Houston RGB", preset="tiny", iterations=2, patch=16, batch=1)
    msg = str(err.value)
    assert "LR-HSI layer 'Houston CASI'" in msg and "HR-MSI layer 'Houston RGB'" in msg, msg
    assert "ratio is 4" in msg and "requested scale is 3" in msg, msg
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- resuming a changed configuration


@pytest.fixture(scope="module")
def trained(cave_tif, tmp_path_factory):
    """A run folder checkpointed at step 4 of 8 (scale 4, 31 bands, tiny, bicubic base)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer(_cfg(cave_tif, run)).run(max_steps=4)
    assert resolve_checkpoint(run).name == "step_00000004"
    return run


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("over,expect", [
    ({"data": {"scale": 2, "val_region": [64, 64, 32]}}, ["data.scale: 4 -> 2"]),
    ({"model": {"preset": "small"}}, ['preset: "tiny" -> "small"', "model.width: 16 -> 32", "model.layers: 2 -> 3"]),
    ({"model": {"preset": "tiny", "width": 24}}, ["model.width: 16 -> 24"]),
    ({"data": {"base": "mtf_glp_hs"}}, ['data.base: "bicubic" -> "mtf_glp_hs"']),
    ({"data": {"msi_bands": ["red", "green"]}}, ["msi_bands: 3 -> 2", 'msi_band_names: ["blue", "green", "red"] -> ["red", "green"]']),
    ({"data": {"scale": 2, "base": "mtf_glp_hs"}}, ["data.scale: 4 -> 2", 'data.base: "bicubic" -> "mtf_glp_hs"']),
])
def test_resume_refuses_a_changed_configuration(trained, cave_tif, tmp_path, over, expect):
    run = _copy_run(trained, tmp_path / "run")
    with pytest.raises(ResumeMismatch) as err:
        Trainer(_cfg(cave_tif, run, **over), resume=True)
    msg = str(err.value)
    assert "step_00000004" in msg and "resume_mismatch: allow" in msg and "--allow-config-change" in msg, msg
    for part in expect:
        assert part in msg, msg
    assert resolve_checkpoint(run).name == "step_00000004"  # nothing touched


def test_resume_with_allow_continues_and_says_what_changed(trained, cave_tif, tmp_path):
    run = _copy_run(trained, tmp_path / "run")
    lines = []
    cfg = _cfg(cave_tif, run, data={"base": "mtf_glp_hs"}, resume_mismatch="allow")
    tr = Trainer(cfg, resume=True, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert tr.step == 4
    assert any("changed configuration" in x and 'data.base: "bicubic" -> "mtf_glp_hs"' in x for x in lines), lines
    tr.run()
    assert tr.step == 8 and resolve_checkpoint(run).name == "step_00000008"
    # the weights cannot follow a new band count, allowed or not
    with pytest.raises(ResumeMismatch, match=r"weights do not fit the new model \(msi_bands: 3 -> 2"):
        Trainer(_cfg(cave_tif, _copy_run(trained, tmp_path / "run2"), data={"msi_bands": ["red", "green"]},
                     resume_mismatch="allow"), resume=True)
    with pytest.raises(ValueError, match="resume_mismatch must be one of refuse, allow"):
        Trainer(_cfg(cave_tif, run, resume_mismatch="yes"))


def test_resume_keeps_the_trained_residual_scale(cave_tif, tmp_path):
    """``residual_scale: auto`` is measured once; a resume with another held-out square keeps the trained value."""
    model = {"preset": "tiny", "residual_scale": "auto", "head_init_gain": 0.0}
    first = Trainer(_cfg(cave_tif, tmp_path / "run", model=model))
    first.run(max_steps=4)
    other = _cfg(cave_tif, tmp_path / "run", model=model, data={"val_region": [0, 0, 32]})
    assert build_data(other["data"], seed=5).residual_rms() != pytest.approx(first.model.cfg.residual_scale, rel=1e-6)
    second = Trainer(other, resume=True)
    assert second.model.cfg.residual_scale == first.model.cfg.residual_scale and second.step == 4


def test_cli_allow_config_change(trained, cave_tif, tmp_path):
    from core.train import main

    run = _copy_run(trained, tmp_path / "run")
    args = ["--set", f"run_dir={run}", "--set", f"data.hsi={cave_tif}", "--set", "data.srf=nikon_d700",
            "--set", "data.val_region=[64, 64, 32]", "--set", "model.preset=tiny", "--set", "seed=5", "--set", "device=cpu",
            "--set", "stages=[{steps: 8, patch: 16, batch: 2}]", "--set", "log_every=0", "--set", "data.base=mtf_glp_hs",
            "--set", "checkpoint.every=4", "--resume"]
    with pytest.raises(ResumeMismatch, match='data.base: "bicubic" -> "mtf_glp_hs"'):
        main(args)
    assert main([*args, "--allow-config-change"]) == 0
    assert resolve_checkpoint(run).name == "step_00000008"


def test_train_algorithm_refuses_changed_scale_unless_allowed(qgis_app, cave_tif, shared_data, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = {"REFERENCE": str(cave_tif), "SCALE": 4, "SENSOR": 2, "PRESET": 0, "ITERATIONS": 2, "PATCH": 16, "BATCH": 1,
              "PROGRESSIVE": False, "MODEL": str(tmp_path / "m.onnx"), "CHECKPOINTS": str(tmp_path / "ckpt")}
    processing.run("hsrdiff:train", params)
    with pytest.raises(QgsProcessingException, match="data.scale: 4 -> 2"):
        processing.run("hsrdiff:train", dict(params, SCALE=2, ITERATIONS=4))
    processing.run("hsrdiff:train", dict(params, SCALE=2, ITERATIONS=4, ALLOW_CONFIG_CHANGE=True))
    assert json.loads((resolve_checkpoint(tmp_path / "ckpt") / "export_info.json").read_text())["scale"] == 2
    wald = {"LR_HSI": str(shared_data / HS), "HR_MSI": str(shared_data / RGB), "SCALE": 3, "PRESET": 0, "ITERATIONS": 2,
            "MODEL": str(tmp_path / "w.onnx"), "CHECKPOINTS": str(tmp_path / "wald")}
    with pytest.raises(QgsProcessingException, match=r"ratio is 4 \(LR-HSI layer 'houston2018_hs'.*HR-MSI layer "
                                                      r"'houston2018_rgb'.*requested scale is 3"):
        processing.run("hsrdiff:train", wald)
    assert not (tmp_path / "wald").exists()


# --------------------------------------------------------------------------- one log record per step


def test_resumed_run_logs_each_step_once(cave_tif, tmp_path):
    """Killed after logging step 6 but checkpointed at 4 (and mid-write): the resumed log equals an uninterrupted one."""
    over = {"log_every": 1, "val": {"every": 2, "steps": 2}}
    straight = Trainer(_cfg(cave_tif, tmp_path / "a", **over))
    straight.run()
    first = Trainer(_cfg(cave_tif, tmp_path / "b", **over))
    first.run(max_steps=6)
    del first
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 0.1')  # a line cut short by the kill
    lines = []
    second = Trainer(_cfg(cave_tif, tmp_path / "b", **over), resume=True, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert second.step == 4
    second.run()
    got, ref = _records(tmp_path / "b"), _records(tmp_path / "a")
    assert [r.get("step", r.get("val", {}).get("step")) for r in got] == [1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8]
    for rec in got + ref:
        rec.pop("s_per_step", None)
        rec.get("val", {}).pop("seconds", None)
    assert got == ref
    assert any("dropped 4 records after step 4" in x for x in lines), lines  # steps 5, 6, val 6 and the cut line
    from core.training.selection import validation_records

    assert [r["step"] for r in validation_records(tmp_path / "b")] == [2, 4, 6, 8]


def test_training_twice_in_one_process_prints_each_line_once(cave_tif, tmp_path, capsys):
    from core.train import main

    def handlers():
        return [len(logging.getLogger(n).handlers) for n in ("", "hsr_diff", "hsr_diff.export")]

    before = handlers()
    for run in ("one", "two"):
        args = ["--set", f"run_dir={tmp_path / run}", "--set", f"data.hsi={cave_tif}", "--set", "data.srf=nikon_d700",
                "--set", "data.val_region=[64, 64, 32]", "--set", "model.preset=tiny", "--set", "device=cpu",
                "--set", "stages=[{steps: 3, patch: 16, batch: 1}]", "--set", "log_every=1", "--set", "val.every=0"]
        assert main(args) == 0
        out = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert len(out) == len(set(out)), out
        assert sum(x.startswith("step ") for x in out) == 3, out
    assert handlers() == before
