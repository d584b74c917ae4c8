"""``export.batch``: many scenes on a Dask LocalCluster, bit-identical to single-process runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from osgeo import gdal  # noqa: E402

from core.raster_io import read_raster  # noqa: E402
from export.batch import Pair, PairsFileError, main, read_pairs, run_batch  # noqa: E402
from export.superresolve import superresolve  # noqa: E402
from export.testing import contract_model, make_enmap_pair, make_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BANDS = list(range(0, 224, 10)) + [130]
C, M, S = len(BANDS), 4, 4
KW = dict(steps=3, sampler="ancestral", seed=3, tile=32, overlap=8)
VARIANTS = [dict(drop_lr_cols=1), dict(drop_lr_cols=2, lr_nodata_pixel=(5, 7)),
            dict(drop_lr_cols=1, lr_nodata_pixel=None, msi_nodata_box=(0, 12, 0, 20)), dict(drop_lr_cols=3, msi_nodata_box=None)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("batch_in")
    pairs = [make_enmap_pair(root / f"s{i}", shared_data, bands=BANDS, scale=S, msi_bands=M, **v)
             for i, v in enumerate(VARIANTS) if (root / f"s{i}").mkdir() is None]
    from core.normalization import BandNormalization

    hn = BandNormalization.fit(np.nan_to_num(pairs[0]["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(pairs[0]["msi_array"]))
    md = make_metadata(C, M, scale=S, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=pairs[0]["meta"].wavelengths,
                       msi_band_names=[f"MSI {i + 1}" for i in range(M)])
    (root / "models").mkdir()
    model = contract_model(root / "models" / "contract.onnx", md)
    ref = root / "ref"
    ref.mkdir()
    refs = []
    for i, p in enumerate(pairs):
        refs.append(ref / f"sr{i}.tif")
        superresolve(p["lr"], p["msi"], model, refs[-1], threads=1, **KW)
    return {"pairs": pairs, "model": model, "refs": refs}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _pairs(scenes, out: Path) -> list[Pair]:
    return [Pair(str(p["lr"]), str(p["msi"]), str(out / f"sr{i}.tif")) for i, p in enumerate(scenes["pairs"])]


def _same_file(a, b) -> None:
    x, mx = read_raster(a)
    y, my = read_raster(b)
    assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), (a, b)
    for f in ("shape", "geotransform", "crs_wkt", "nodata", "dtype", "band_names"):
        assert getattr(mx, f) == getattr(my, f), f
    for f in ("wavelengths", "fwhm", "bad_bands"):
        np.testing.assert_array_equal(getattr(mx, f), getattr(my, f))
    da, db = gdal.Open(str(a)), gdal.Open(str(b))
    assert da.GetMetadata() == db.GetMetadata()
    for k in range(1, da.RasterCount + 1):
        assert da.GetRasterBand(k).GetMetadata() == db.GetRasterBand(k).GetMetadata()


def test_local_cluster_two_workers_bit_identical(scenes, tmp_path):
    lines = []
    res = run_batch(_pairs(scenes, tmp_path), model=scenes["model"], workers=2, log=lines.append, **KW)
    assert res.ok and res.workers == 2 and len(res.done) == 4, res.summary()
    assert all(s.attempts == 1 for s in res.scenes)
    workers = {s.worker for s in res.scenes}
    assert sum(not s.reused_model for s in res.scenes) == len(workers)  # each worker opened the model once
    for i, ref in enumerate(scenes["refs"]):
        _same_file(tmp_path / f"sr{i}.tif", ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"sr{i}.tif" for i in range(4)]  # no temporary or lock file left
    assert "4/4 scenes finished" in lines[-1] and any("left" in m for m in lines)


def test_resumed_batch_skips_complete_outputs(scenes, client, tmp_path):
    pairs = _pairs(scenes, tmp_path)
    first = run_batch(pairs[:2], model=scenes["model"], scheduler=client, log=None, **KW)
    assert len(first.done) == 2
    stamps = [os.stat(p.out).st_mtime_ns for p in pairs[:2]]
    res = run_batch(pairs, scheduler=client.scheduler.address, models_dir=scenes["model"].parent, log=None, **KW)
    assert [s.status for s in res.scenes] == ["skipped", "skipped", "done", "done"]
    assert res.scenes[2].model == str(scenes["model"])  # the bundled model that fits
    assert [os.stat(p.out).st_mtime_ns for p in pairs[:2]] == stamps
    for i, ref in enumerate(scenes["refs"]):
        _same_file(pairs[i].out, ref)


class KillOnce(distributed.WorkerPlugin):
    """Kills the worker process inside the first scene's tile loop (after its output writer exists)."""

    name = "kill-once"

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker):
        import export.superresolve as sr

        inner, marker = sr.run_tiled, self.marker

        def run_tiled(den, source, sink, **kw):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return inner(den, source, sink, **kw)
            os.write(fd, str(sink.out.path).encode())
            os.close(fd)
            os._exit(1)

        sr.run_tiled = run_tiled


def test_killed_worker_mid_batch_is_retried(scenes, client, tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(str(marker)))
    try:
        out = tmp_path / "out"
        out.mkdir()
        res = run_batch(_pairs(scenes, out), model=scenes["model"], scheduler=client, log=None, **KW)
    finally:
        client.unregister_worker_plugin(KillOnce.name)
    killed = Path(marker.read_text())
    assert res.ok and len(res.done) == 4, res.summary()
    retried = [s for s in res.scenes if s.retried]
    assert killed.name in [Path(s.pair.out).name for s in retried] and all(s.attempts == 2 for s in retried)
    assert any(line.startswith("retried:") and killed.name in line for line in res.summary())
    for i, ref in enumerate(scenes["refs"]):
        _same_file(out / f"sr{i}.tif", ref)
    assert sorted(p.name for p in out.iterdir()) == [f"sr{i}.tif" for i in range(4)]  # the stale lock was taken over


def test_failed_scene_is_reported_not_skipped(scenes, client, tmp_path, capsys):
    pairs = _pairs(scenes, tmp_path)[:2]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    pairs[1] = Pair(str(broken), pairs[1].msi, pairs[1].out, 7)
    pairs.append(Pair(str(tmp_path / "missing.tif"), pairs[0].msi, str(tmp_path / "m.tif"), 9))
    res = run_batch(pairs, model=scenes["model"], scheduler=client, log=None, **KW)
    assert [s.status for s in res.scenes] == ["done", "failed", "failed"] and not res.ok
    assert [s.attempts for s in res.scenes] == [1, 2, 0]  # raised twice (retried once); refused before submitting
    failed = [line for line in res.summary() if line.startswith("FAILED")]
    assert "line 7" in failed[0] and "broken.tif" in failed[0]
    assert "line 9" in failed[1] and "missing.tif does not exist" in failed[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.tif", "sr0.tif"]


def test_pairs_file_errors_name_the_line(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("# lr\tmsi\tout\n\na.tif\tb.tif\tc.tif\n  \nd.tif e.tif f.tif\n")
    with pytest.raises(PairsFileError, match=rf"{f}:5: expected LR<TAB>MSI<TAB>OUT .* got 1 field"):
        read_pairs(f)
    f.write_text("a.tif\tb.tif\tc.tif\nd.tif\te.tif\tc.tif\n")
    with pytest.raises(PairsFileError, match=rf"{f}:2: output .*c\.tif is already the output of line 1"):
        read_pairs(f)
    f.write_text("# only a comment\n")
    with pytest.raises(PairsFileError, match="no pairs"):
        read_pairs(f)
    f.write_text("a.tif\tb.tif\n")
    assert main(["--pairs", str(f), "-q"]) == 2
    f.write_text("# comment\nlr.tif\tsub/msi.tif\t/abs/out.tif\n")
    assert read_pairs(f) == [Pair(str(tmp_path / "lr.tif"), str(tmp_path / "sub" / "msi.tif"), "/abs/out.tif", 2)]


def test_cli_without_dask_prints_the_install_command(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("a.tif\tb.tif\tc.tif\n")
    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None; from export.batch import main; "
            f"sys.exit(main(['--pairs', {str(f)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert "pip install 'dask==2026.8.0' 'distributed==2026.8.0'" in r.stderr


def test_cli_module_runs_and_resumes(scenes, tmp_path):
    f = tmp_path / "pairs.tsv"
    rows = [f"{p['lr']}\t{p['msi']}\tout/sr{i}.tif" for i, p in enumerate(scenes["pairs"][:2])]
    f.write_text("# two scenes\n" + "\n".join(rows) + "\n")
    (tmp_path / "out").mkdir()
    cmd = [sys.executable, "-m", "export.batch", "--pairs", str(f), "--model", str(scenes["model"]), "--workers", "1",
           "--steps", "3", "--sampler", "ancestral", "--seed", "3", "--tile", "32", "--overlap", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "batch: 2/2 scenes finished" in r.stderr and "2 done, 0 skipped" in r.stdout
    for i in range(2):
        _same_file(tmp_path / "out" / f"sr{i}.tif", scenes["refs"][i])
    r = subprocess.run(cmd + ["-q"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0 and "0 done, 2 skipped" in r.stdout, r.stderr


# ---------------------------------------------------------------------- one scene split into tile work units

SPLIT_KW = dict(KW, samples=2)


@pytest.fixture(scope="module")
def split_scene(scenes, tmp_path_factory):
    """A model on the MTF-GLP-HS base (fitted once on the client) and single-process references with uncertainty."""
    from core.normalization import BandNormalization

    root = tmp_path_factory.mktemp("split")
    p = scenes["pairs"][1]
    hn = BandNormalization.fit(np.nan_to_num(p["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(p["msi_array"]))
    md = make_metadata(C, M, scale=S, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=p["meta"].wavelengths,
                       msi_band_names=[f"MSI {i + 1}" for i in range(M)], base="mtf_glp_hs")
    model = contract_model(root / "glp.onnx", md)
    ref, ref_std = root / "ref.tif", root / "ref_std.tif"
    superresolve(p["lr"], p["msi"], model, ref, threads=1, uncertainty_path=ref_std, **SPLIT_KW)
    return {"pair": p, "model": model, "ref": ref, "ref_std": ref_std}


def test_one_scene_as_tile_units_on_two_workers_is_bit_identical(split_scene, client, tmp_path):
    p = split_scene["pair"]
    lines = []
    pair = Pair(str(p["lr"]), str(p["msi"]), str(tmp_path / "sr.tif"))
    res = run_batch([pair], model=split_scene["model"], scheduler=client, uncertainty=True, log=lines.append, **SPLIT_KW)
    assert res.ok and len(res.done) == 1, res.summary()
    assert any(m.startswith(f"batch: {pair.out}: ") and m.endswith("work units") for m in lines), lines  # auto: 1 scene < 2 workers
    assert any("tile units, about" in m for m in lines) and "1/1 scenes finished" in lines[-1]
    assert len(res.scenes[0].worker.split(", ")) == 2  # both workers computed tiles
    _same_file(tmp_path / "sr.tif", split_scene["ref"])
    _same_file(tmp_path / "sr_std.tif", split_scene["ref_std"])
    assert sorted(q.name for q in tmp_path.iterdir()) == ["sr.tif", "sr_std.tif"]  # the tile parts are gone


def test_a_noisy_scene_as_tile_units_is_averaged_with_cnmf_as_a_single_run_is(split_scene, client, tmp_path,
                                                                             monkeypatch):
    """The split scene with 30 dB of noise on its LR-HSI: the merged output is the model's tiles averaged with CNMF's
    fusion (``core.ensemble``), bit-identical to one process's run, uncertainty included. Its 4-band MSI is read
    for noise here (the gate is decided on the client, which also merges)."""
    import core.ensemble
    from core.raster_io import write_raster

    monkeypatch.setattr(core.ensemble, "MIN_MSI_BANDS", 4)
    p = split_scene["pair"]
    lr, meta = read_raster(p["lr"])
    sd = np.nanmean(np.abs(lr), axis=(1, 2)) / 10 ** (30 / 20)
    noisy = write_raster(tmp_path / "lr_noisy.tif", (lr + np.random.default_rng(1).standard_normal(lr.shape)
                                                      * sd[:, None, None]).astype(np.float32), meta)
    kw = dict(SPLIT_KW, check="report")
    ref, ref_std = tmp_path / "ref.tif", tmp_path / "ref_std.tif"
    superresolve(noisy, p["msi"], split_scene["model"], ref, threads=1, uncertainty_path=ref_std, **kw)
    assert gdal.Open(str(ref)).GetMetadataItem("hsr_diff_blend").endswith("x CNMF's (core.ensemble)")
    out = tmp_path / "out"
    out.mkdir()
    res = run_batch([Pair(str(noisy), str(p["msi"]), str(out / "sr.tif"))], model=split_scene["model"], scheduler=client,
                    uncertainty=True, log=None, units="tiles", **kw)
    assert res.ok, res.summary()
    _same_file(out / "sr.tif", ref)
    _same_file(out / "sr_std.tif", ref_std)


class KillInTiles(distributed.WorkerPlugin):
    """Kills the worker process in the first tile task it is given (once in the whole cluster)."""

    name = "kill-in-tiles"

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker):
        import export.batch as batch

        inner, marker = batch._run_group, self.marker

        def run_group(*args):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return inner(*args)
            os.write(fd, str(args[-1]).encode())
            os.close(fd)
            os._exit(1)

        batch._run_group = run_group


def test_killed_worker_in_a_tile_unit_is_retried(split_scene, client, tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillInTiles(str(marker)))
    out = tmp_path / "out"
    out.mkdir()
    try:
        pair = Pair(str(split_scene["pair"]["lr"]), str(split_scene["pair"]["msi"]), str(out / "sr.tif"))
        res = run_batch([pair], model=split_scene["model"], scheduler=client, uncertainty=True, log=None, units="tiles",
                        **SPLIT_KW)
    finally:
        client.unregister_worker_plugin(KillInTiles.name)
    assert marker.exists() and res.ok, res.summary()
    assert res.scenes[0].attempts == 2 and res.retried
    _same_file(out / "sr.tif", split_scene["ref"])
    _same_file(out / "sr_std.tif", split_scene["ref_std"])
    assert sorted(q.name for q in out.iterdir()) == ["sr.tif", "sr_std.tif"]


class FailTiles(distributed.WorkerPlugin):
    """Every tile task raises."""

    name = "fail-tiles"

    def setup(self, worker):
        import export.batch as batch

        def run_group(*args):
            raise RuntimeError(f"tile group {args[-1]} broke")

        batch._run_group = run_group

    def teardown(self, worker):
        import importlib

        import export.batch as batch

        importlib.reload(batch)


def test_a_failed_tile_unit_fails_its_scene_and_leaves_nothing(split_scene, client, tmp_path):
    pair = Pair(str(split_scene["pair"]["lr"]), str(split_scene["pair"]["msi"]), str(tmp_path / "sr.tif"))
    bad = tmp_path / "other.onnx"  # a model whose band count does not fit: refused on the client, nothing submitted
    contract_model(bad, make_metadata(C + 1, M, scale=S))
    res = run_batch([pair], model=bad, scheduler=client, log=None, units="tiles", **KW)
    assert not res.ok and res.scenes[0].status == "failed" and res.scenes[0].attempts == 0
    client.register_plugin(FailTiles())
    try:
        res = run_batch([pair], model=split_scene["model"], scheduler=client, log=None, units="tiles", **KW)
    finally:
        client.unregister_worker_plugin(FailTiles.name)
    s = res.scenes[0]
    assert s.status == "failed" and s.attempts == 2 and "broke" in s.error, res.summary()
    assert any(line.startswith("FAILED") and "broke" in line for line in res.summary())
    assert sorted(q.name for q in tmp_path.iterdir()) == ["other.onnx"]  # no output, no parts, no lock
