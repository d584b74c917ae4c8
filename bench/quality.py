"""Reduced-resolution (Wald's protocol) quality benchmark of the fusion methods on real crops.

Protocol, per scene of ``bench/scenes.py`` and scale: the reference is the crop without bad bands
(``bbl`` = 0, bands with nodata in the crop, constant bands); the LR-HSI is the reference blurred
by a Gaussian PSF with FWHM = scale and decimated (``core.sensor.degrade_spatial``), the HR-MSI is
the reference through a real sensor response (``core.sensor.spectral_response``); noise-free.
Every method gets ``(lr_hsi, hr_msi, scale, srf=R, psf=PSF)``; metrics (``core.metrics.evaluate``)
drop a ``scale`` px border. Methods live in ``METHODS``; a model-based method is added with
``register_method(name, fn, needs_model=True)`` and receives ``model_path=`` from ``--model`` (plus the
scene's ``wavelengths``, ``fwhm`` and ``msi_band_names``). Model-based methods are scored on the held-out
crops only (``Scene.held_out``; the split is in ``bench/split.md``), where the classical methods are scored
on the same pixels; a scene with ``scales`` runs at those scales only.

``hsrdiff`` runs ``export.superresolve.superresolve`` - the QGIS algorithm's code path - on temporary
GeoTIFFs written from the simulated arrays, with the plugin's default sampler (``export.defaults``;
``--steps``/``--sampler`` override) and its default check against classical methods (``check="best"``:
the row's ``chosen`` says what wrote the output); ``hsrdiff_model`` is the same with ``check="off"``, the
model's own result. ``--model`` takes one or more ``.onnx`` files separated by commas;
each (scene, scale) uses the first model whose metadata fits (HSI bands and wavelengths, MSI bands,
scale) and is skipped, with the reason, when none does. Its seconds include opening the ONNX Runtime session.

Usage: ``python bench/quality.py [--methods bicubic,gsa,...,hsrdiff] [--scales 3,4,8] [--quick]
[--scenes a,b] [--model A.onnx,B.onnx] [--protocol NAME,...|all] [--out bench/results/quality]`` (writes ``.md``
and ``.json``).

``--protocol`` runs the cross-protocol benchmark instead (default output ``bench/results/quality_protocols``):
each pair is made by a named protocol of ``core.sensor.protocols.PROTOCOLS`` (odd kernels at other decimation
phases, wider / narrower / box PSFs, shifts, SRF shifts, MSI gain and offset, noise), and each classical method
runs three times: ``true`` (the protocol's PSF as a kernel of our convention and its true response), ``estimated``
(what ``core.jobs.common.estimate_degradation`` and the NNLS ``core.sensor.estimate_srf`` make of the pair) and
``nominal`` (centred Gaussian, FWHM = scale, the nominal response); a model-based method runs ``estimated``
(``--degradation estimate``) and ``nominal`` (``--degradation model``).
One row per scene x scale x protocol x method x knowledge, and per method its worst margin over the best
classical method of a cell (:func:`summarise`).
Held-out comparison: ``--methods bicubic,gsa,mtf_glp_hs,cnmf,hsrdiff --scales 3,4,8 --scenes
enmap_southeast_holdout,enmap_southeast_holdout64,cave_balloons_holdout --model models/a.onnx,models/b.onnx``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scenes import SCENES, Scene  # noqa: E402
from core.baselines import BASELINES  # noqa: E402
from core.jobs.common import estimate_degradation  # noqa: E402
from core.metrics import evaluate  # noqa: E402
from core.raster_io import read_raster  # noqa: E402
from core.sensor import default_msi_bands, estimate_srf, gaussian_psf, simulate_pair, spectral_response  # noqa: E402
from core.sensor.protocols import PROTOCOLS, Degradation, protocol  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TABLE_METRICS = ("psnr", "ssim", "sam", "ergas")


@dataclass(frozen=True)
class Method:
    """A fusion method ``fn(lr_hsi, hr_msi, scale, srf=None, psf=None, **opts) -> hr_hsi``."""

    fn: Callable[..., np.ndarray]
    needs_model: bool = False
    held_out_only: bool = False  # scored on held-out crops only (a trained method must not see its training pixels)


class NotApplicable(Exception):
    """The method cannot run on this scene and scale (e.g. no model fits); the row is skipped with this reason."""


METHODS: dict[str, Method] = {name: Method(fn) for name, fn in BASELINES.items()}


def register_method(name: str, fn: Callable[..., np.ndarray], needs_model: bool = False,
                    held_out_only: bool | None = None) -> None:
    """Add a method (e.g. ``hsrdiff``, called with ``model_path=``) to the benchmark registry.

    ``held_out_only`` (default: ``needs_model``) restricts it to the scenes marked ``held_out``.
    """
    METHODS[name] = Method(fn, needs_model, needs_model if held_out_only is None else held_out_only)


@dataclass
class Prepared:
    scene: str
    reference: np.ndarray  # (bands, rows, cols) float32
    wavelengths: np.ndarray
    fwhm: np.ndarray | None
    dropped: int
    note: str


def load_scene(scene: Scene, quick: bool = False, data_dir: Path = DATA) -> Prepared:
    """Read the crop and drop bad bands (bbl = 0), bands with nodata in the crop and constant bands."""
    cube, meta = read_raster(data_dir / scene.file)
    rows, cols = (scene.quick_rows or scene.rows, scene.quick_cols or scene.cols) if quick else (scene.rows, scene.cols)
    crop = cube[:, rows[0]:rows[1], cols[0]:cols[1]]
    if scene.wavelength_range is not None or meta.wavelengths is None:
        lo, hi = scene.wavelength_range or (400.0, 2500.0)
        wl, fwhm = np.linspace(lo, hi, cube.shape[0]), None
    else:
        wl, fwhm = meta.wavelengths, meta.fwhm
    flat = crop.reshape(crop.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    spread = np.zeros(flat.shape[0])
    spread[finite] = flat[finite].std(axis=1)
    keep = meta.good_bands & finite & (spread > 0)
    return Prepared(scene.name, crop[keep], wl[keep], None if fwhm is None else fwhm[keep],
                    int((~keep).sum()), scene.note)


def simulated_pair(scene: Scene, prep: Prepared, scale: int):
    """The benchmark's pair of a loaded crop (Wald's protocol): ``(srf, psf, lr, msi, ref)``, the scene's
    ``SpectralResponse``, the Gaussian PSF, the LR-HSI ``(b, h, w)``, the HR-MSI ``(m, H, W)`` and the reference
    cut to the MSI's grid ``(b, H, W)``."""
    srf = spectral_response(scene.sensor, prep.wavelengths, prep.fwhm, bands=scene.msi_bands or default_msi_bands(scene.sensor))
    psf = gaussian_psf(scale)
    lr, msi = simulate_pair(prep.reference, scale, srf.matrix, psf)
    return srf, psf, lr, msi, prep.reference[:, :msi.shape[1], :msi.shape[2]]


def _skipper(skipped: list[dict], log):
    def skip(scene: str, scale: int | None, method: str | None, reason: str) -> None:
        skipped.append({"scene": scene, "scale": scale, "method": method, "reason": reason})
        log(f"# skipped {scene}{f' x{scale}' if scale else ''}{f' {method}' if method else ''}: {reason}")
    return skip


def _selection(methods: list[str], scales: list[int], scene: Scene, skip) -> tuple[list[int], list[str]]:
    """The scales and methods that run on ``scene`` (the crop's own scales; trained methods on held-out crops only)."""
    run_scales = [s for s in scales if scene.scales is None or s in scene.scales]
    for s in scales:
        if s not in run_scales:
            skip(scene.name, s, None, f"this crop is for scales {', '.join(map(str, scene.scales))}")
    run_methods = [m for m in methods if scene.held_out or not METHODS[m].held_out_only]
    for m in methods:
        if m not in run_methods:
            skip(scene.name, None, m, "trained method: scored on the held-out crops only (bench/split.md)")
    return run_scales, run_methods


def _call(name: str, lr: np.ndarray, msi: np.ndarray, scale: int, prep: Prepared, band_names: list[str], srf, psf,
          model_path: str | None, model_opts: dict | None) -> tuple[np.ndarray, dict, float]:
    """Run one method: ``(output, facts for the row, seconds)``; :class:`NotApplicable` passes through."""
    method = METHODS[name]
    opts = {}
    if method.needs_model:
        opts = {"model_path": model_path, "wavelengths": prep.wavelengths, "fwhm": prep.fwhm,
                "msi_band_names": band_names, **(model_opts or {})}
    t0 = time.perf_counter()
    out = method.fn(lr, msi, scale, srf=srf, psf=psf, **opts)
    extra = {}
    if isinstance(out, tuple):  # (array, facts for the row), e.g. which model ran
        out, extra = out
    return out, extra, time.perf_counter() - t0


def run(methods: list[str], scales: list[int], scenes: list[Scene], quick: bool, model_path: str | None,
        log=print, model_opts: dict | None = None, skipped: list[dict] | None = None) -> list[dict]:
    """Score ``methods`` on ``scenes`` x ``scales``; rows that cannot run go to ``skipped`` (and the log) with why."""
    rows = []
    skip = _skipper([] if skipped is None else skipped, log)
    for scene in scenes:
        run_scales, run_methods = _selection(methods, scales, scene, skip)
        if not run_scales or not run_methods:
            continue
        prep = load_scene(scene, quick)
        for scale in run_scales:
            srf, psf, lr, msi, ref = simulated_pair(scene, prep, scale)
            for name in run_methods:
                try:
                    out, extra, seconds = _call(name, lr, msi, scale, prep, list(srf.band_names), srf.matrix, psf,
                                                model_path, model_opts)
                except NotApplicable as exc:
                    skip(scene.name, scale, name, str(exc))
                    continue
                scores = evaluate(ref, out, scale, border=scale)
                row = {"scene": scene.name, "scale": scale, "method": name, **scores, "seconds": seconds,
                       "hsi_bands": int(ref.shape[0]), "msi_bands": int(msi.shape[0]),
                       "hr_shape": [int(ref.shape[1]), int(ref.shape[2])], "msi_sensor": srf.sensor,
                       "msi_band_names": list(srf.band_names), "bands_dropped": prep.dropped, **extra}
                rows.append(row)
                log(_fmt_row(row))
    return rows


def _fmt_row(r: dict) -> str:
    return (f"| {r['scene']} | {r['scale']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['sam']:.3f} | {r['ergas']:.3f} | {r['seconds']:.2f} |")


# ---------------------------------------------------------------------- hsrdiff (the plugin's code path)


def _fitting_model(model_path: str | None, hsi_bands: int, msi_band_names: list[str], scale: int, wavelengths):
    """The first of the comma-separated ``model_path`` models whose metadata fits; :class:`NotApplicable` if none."""
    from export.bundled import model_fits
    from export.metadata import read_metadata

    paths = [p for p in str(model_path or "").split(",") if p]
    if not paths:
        raise NotApplicable("no --model given")
    why = []
    for p in paths:
        md = read_metadata(p)  # a missing or foreign file is an error, not a skip
        name = os.path.basename(p)
        if reason := model_fits(md, hsi_bands, len(msi_band_names), scale, list(msi_band_names)):
            why.append(f"{name}: {reason}")
        elif md.wavelengths_nm is not None and wavelengths is not None and \
                np.max(np.abs(np.asarray(md.wavelengths_nm) - np.asarray(wavelengths))) > 1.0:
            why.append(f"{name}: its band wavelengths differ from the scene's by up to "
                       f"{np.max(np.abs(np.asarray(md.wavelengths_nm) - np.asarray(wavelengths))):.1f} nm")
        else:
            return p, md
    raise NotApplicable("no model fits: " + "; ".join(why))


def hsrdiff(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, model_path: str | None = None,
            wavelengths=None, fwhm=None, msi_band_names=None, steps: int | None = None, sampler: str | None = None,
            samples: int | None = None, degradation: str | None = None, check: str | None = None, blend: bool = True,
            **_) -> tuple[np.ndarray, dict]:
    """HSR-Diff through ``export.superresolve.superresolve`` on temporary GeoTIFFs (local pixel grid, no CRS).

    The model is chosen by its metadata (:func:`_fitting_model`); sampler settings are the plugin's defaults
    (``export.defaults``) unless ``steps``/``sampler``/``samples``/``degradation`` are given (``samples`` > 1: their
    mean; ``degradation``: ``estimate`` or ``model``; ``blend``: Super-resolve's average with CNMF on a noisy pair).
    ``srf``/``psf`` are not used: the model learned them, and the
    degradation it conditions on is its own or the one estimated from the pair. Returns the result and the row's
    ``model``, ``model_info``, ``sampler`` and ``degradation`` (what the run used) facts.
    """
    from osgeo import gdal

    from core.raster_io import read_raster, write_raster
    from export import defaults
    from export.superresolve import superresolve

    names = list(msi_band_names or [f"MSI {i + 1}" for i in range(hr_msi.shape[0])])
    path, md = _fitting_model(model_path, lr_hsi.shape[0], names, scale, wavelengths)
    kw = defaults.sampler_kwargs()
    if steps is not None:
        kw["steps"] = int(steps)
    if sampler is not None:
        kw["sampler"] = sampler
    if samples is not None:
        kw["samples"] = int(samples)
    if degradation is not None:
        kw["degradation"] = degradation
    if check is not None:
        kw["check"] = check
    with tempfile.TemporaryDirectory(prefix="hsrdiff_bench_") as tmp:
        lr_p = write_raster(Path(tmp) / "lr.tif", np.asarray(lr_hsi, np.float32), geotransform=(0.0, float(scale), 0.0, 0.0, 0.0,
                            -float(scale)), wavelengths=wavelengths, fwhm=fwhm,
                            band_names=[f"band {i + 1}" for i in range(lr_hsi.shape[0])])
        msi_p = write_raster(Path(tmp) / "msi.tif", np.asarray(hr_msi, np.float32), geotransform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
                             band_names=names)
        res = superresolve(lr_p, msi_p, path, Path(tmp) / "out.tif", blend=blend, **kw)
        out, _ = read_raster(res.out_path)
        ds = gdal.Open(res.out_path)
        used, blended = ds.GetMetadataItem("hsr_diff_degradation"), ds.GetMetadataItem("hsr_diff_blend")
        ds = None
    return out, {"model": os.path.basename(path), "model_info": md.describe(), "degradation": used, "chosen": res.method,
                 "blend": blended,
                 "sampler": f"{kw['sampler']} {kw['steps']} steps, eta {kw['eta']}, seed {kw['seed']}, "
                                                                 f"{kw['samples']} sample(s), {res.provider_info}"}


register_method("hsrdiff", hsrdiff, needs_model=True)


def hsrdiff_model(*args, **kwargs) -> tuple[np.ndarray, dict]:
    """:func:`hsrdiff` with ``check="off"``: the model's own result, whatever the check would choose."""
    return hsrdiff(*args, **{**kwargs, "check": "off"})


register_method("hsrdiff_model", hsrdiff_model, needs_model=True)


# ---------------------------------------------------------------------- cross-protocol benchmark (--protocol)


@dataclass(frozen=True)
class Knowledge:
    """What a classical method is told about a pair: the PSF (a kernel of our convention), the response matrix
    ``(msi_bands, hsi_bands)`` in the units linking the two images, and a line saying where they came from."""

    psf: np.ndarray
    srf: np.ndarray
    given: str


def protocol_pair(scene: Scene, prep: Prepared, scale: int, deg: Degradation, seed: int = 0):
    """The pair of a loaded crop under ``deg``: ``(nominal, true_srf, lr, msi, ref)``: the sensor's nominal and the
    pair's true (perturbed) ``SpectralResponse``, the LR-HSI, the HR-MSI and the reference cut to the MSI's grid."""
    bands = scene.msi_bands or default_msi_bands(scene.sensor)
    nominal = spectral_response(scene.sensor, prep.wavelengths, prep.fwhm, bands=bands)
    true_srf = deg.response(scene.sensor, prep.wavelengths, prep.fwhm, bands=bands)
    lr, msi = deg.apply(prep.reference, scale, true_srf, rng=seed)
    return nominal, true_srf, lr, msi, prep.reference[:, :msi.shape[1], :msi.shape[2]]


def true_knowledge(deg: Degradation, scale: int, true_srf) -> Knowledge:
    """The protocol's own PSF as a kernel of our convention and its true response times the MSI gains (the
    offsets have no place in a response matrix and are not given)."""
    t = deg.true_psf(scale)
    gain = np.resize(np.asarray(deg.gain), true_srf.msi_bands)
    note = "; MSI offsets not given" if any(deg.offset) else ""
    return Knowledge(t.kernel, true_srf.matrix * gain[:, None], f"true: {t.describe()}; true SRF{note}")


def estimated_knowledge(lr: np.ndarray, msi: np.ndarray, scale: int, nominal) -> Knowledge:
    """What the product estimates from the pair alone: the registration offset and PSF width of
    ``core.jobs.common.estimate_degradation`` (Super-resolve's ``--degradation estimate``; the nominal PSF where it
    falls back or snaps), then the NNLS response through that PSF (``core.sensor.estimate_srf``) confined to the HSI
    bands the nominal response covers, as *Estimate sensor response and PSF* does."""
    reg, notes = estimate_degradation(lambda r0, c0, n_r, n_c: lr[:, r0:r0 + n_r, c0:c0 + n_c],
                                      lambda r0, c0, n_r, n_c: msi[:, r0:r0 + n_r, c0:c0 + n_c],
                                      lr.shape[1:], scale, "LR-HSI", "HR-MSI")
    if reg is not None:
        psf, given = reg.psf(scale), f"estimated: {reg.describe()}"
    else:
        psf = gaussian_psf(scale)
        given = "estimated: nominal (" + ("; ".join(notes) if notes else "estimate within the snap of the nominal") + ")"
    support = nominal.matrix > 1e-3 * nominal.matrix.max(axis=1, keepdims=True)
    matrix, _ = estimate_srf(lr, msi, scale, psf=psf, support=support)
    return Knowledge(psf, matrix, given + "; NNLS SRF")


KNOWLEDGE = {False: ("true", "estimated", "nominal"), True: ("estimated", "nominal")}
"""The runs of a classical (False) and a model-based (True) method: given the truth, the estimate, or the nominal
degradation (centred Gaussian, FWHM = scale, the sensor's nominal response); a model has no way to take the truth,
and runs with the estimate (``--degradation estimate``) or its own nominal degradation (``--degradation model``)."""
MODEL_DEGRADATION = {"nominal": "model", "estimated": "estimate"}


def run_protocols(methods: list[str], scales: list[int], scenes: list[Scene], protocols: list[str], quick: bool,
                  model_path: str | None, log=print, model_opts: dict | None = None,
                  skipped: list[dict] | None = None) -> list[dict]:
    """One row per scene x scale x protocol x method x knowledge (:data:`KNOWLEDGE`); skips as :func:`run`."""
    rows = []
    skip = _skipper([] if skipped is None else skipped, log)
    for scene in scenes:
        run_scales, run_methods = _selection(methods, scales, scene, skip)
        if not run_scales or not run_methods:
            continue
        prep = load_scene(scene, quick)
        for scale in run_scales:
            for name in protocols:
                deg = protocol(name, scale)
                nominal, true_srf, lr, msi, ref = protocol_pair(scene, prep, scale, deg)
                known = {"true": true_knowledge(deg, scale, true_srf)}
                t0 = time.perf_counter()
                known["estimated"] = estimated_knowledge(lr, msi, scale, nominal)
                estimate_seconds = time.perf_counter() - t0
                known["nominal"] = Knowledge(gaussian_psf(scale), nominal.matrix, "nominal: centred Gaussian, FWHM = scale; "
                                                                                  "nominal SRF")
                for method in run_methods:
                    model_based = METHODS[method].needs_model
                    for knowledge in KNOWLEDGE[model_based]:
                        opts = dict(model_opts or {})
                        if model_based:
                            opts["degradation"] = MODEL_DEGRADATION[knowledge]
                            psf, srf, given = None, None, None
                        else:
                            k = known[knowledge]
                            psf, srf, given = k.psf, k.srf, k.given
                        try:
                            out, extra, seconds = _call(method, lr, msi, scale, prep, list(true_srf.band_names), srf, psf,
                                                        model_path, opts)
                        except NotApplicable as exc:
                            skip(scene.name, scale, method, str(exc))
                            break
                        if model_based:
                            used = extra.get("degradation")
                            given = "the model's nominal degradation" if used == "model" else used
                        elif knowledge == "estimated":
                            seconds += estimate_seconds
                        scores = evaluate(ref, out, scale, border=scale)
                        row = {"scene": scene.name, "scale": scale, "protocol": name, "method": method,
                               "knowledge": knowledge, **scores, "seconds": seconds, "given": given,
                               "degradation": deg.describe(scale), "true_psf": deg.true_psf(scale).describe(),
                               "hsi_bands": int(ref.shape[0]), "msi_bands": int(msi.shape[0]),
                               "hr_shape": [int(ref.shape[1]), int(ref.shape[2])], "msi_sensor": true_srf.sensor,
                               "msi_band_names": list(true_srf.band_names), "bands_dropped": prep.dropped, **extra}
                        rows.append(row)
                        log(_fmt_protocol_row(row))
    return rows


def margins(rows: list[dict]) -> list[dict]:
    """Each row's margin over the best classical method of its cell (scene, scale, protocol): ``psnr_margin``
    (dB, row - best) and ``sam_margin`` (deg, best - row), positive = the row is better, against the classical
    rows of the same knowledge. ``psnr_margin_any``: the same against every classical run of the cell, those given
    the truth included."""
    best: dict[tuple, tuple[dict, dict]] = {}
    for r in rows:
        if METHODS[r["method"]].needs_model:
            continue
        for key in ((r["scene"], r["scale"], r["protocol"], r["knowledge"]), (r["scene"], r["scale"], r["protocol"], "any")):
            p, a = best.get(key, (r, r))
            best[key] = (r if r["psnr"] > p["psnr"] else p, r if r["sam"] < a["sam"] else a)
    out = []
    for r in rows:
        ref = r["knowledge"]
        key = (r["scene"], r["scale"], r["protocol"], ref)
        if key not in best:
            continue
        p, a = best[key]
        top = best[key[:3] + ("any",)][0]
        out.append({**r, "psnr_margin": r["psnr"] - p["psnr"], "sam_margin": a["sam"] - r["sam"],
                    "best_psnr": f"{p['method']} {ref}", "best_sam": f"{a['method']} {ref}",
                    "psnr_margin_any": r["psnr"] - top["psnr"], "best_psnr_any": f"{top['method']} {top['knowledge']}"})
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Per method x knowledge (and per model for model-based methods): the worst PSNR and SAM margins
    (:func:`margins`) with their cells, and the mean PSNR margin."""
    groups: dict[tuple, list[dict]] = {}
    for r in margins(rows):
        groups.setdefault((r["method"], r["knowledge"], ""), []).append(r)
        if r.get("model"):
            groups.setdefault((r["method"], r["knowledge"], r["model"]), []).append(r)
    out = []
    for (method, knowledge, model), rs in groups.items():
        wp = min(rs, key=lambda r: r["psnr_margin"])
        ws = min(rs, key=lambda r: r["sam_margin"])
        wa = min(rs, key=lambda r: r["psnr_margin_any"])
        out.append({"method": method, "knowledge": knowledge, "model": model, "cells": len(rs),
                    "worst_psnr_margin": wp["psnr_margin"], "worst_psnr_cell": _cell(wp), "worst_psnr_vs": wp["best_psnr"],
                    "worst_psnr": wp["psnr"], "worst_sam_margin": ws["sam_margin"], "worst_sam_cell": _cell(ws),
                    "worst_sam_vs": ws["best_sam"], "worst_sam": ws["sam"],
                    "mean_psnr_margin": float(np.mean([r["psnr_margin"] for r in rs])),
                    "worst_psnr_margin_any": wa["psnr_margin_any"], "worst_psnr_any_cell": _cell(wa),
                    "worst_psnr_any_vs": wa["best_psnr_any"]})
    return out


def knowledge_gain(rows: list[dict], better: str, worse: str) -> dict[tuple[str, str], list[float]]:
    """``(method, protocol) -> [PSNR(better) - PSNR(worse)]`` over the scene x scale cells, dB, for two knowledge
    levels (e.g. ``estimated`` over ``nominal``: what estimation buys)."""
    by = {(r["scene"], r["scale"], r["protocol"], r["method"], r["knowledge"]): r["psnr"] for r in rows}
    out: dict[tuple[str, str], list[float]] = {}
    for (scene, scale, proto, method, knowledge), v in by.items():
        other = by.get((scene, scale, proto, method, worse))
        if knowledge == better and other is not None:
            out.setdefault((method, proto), []).append(v - other)
    return out


def _cell(r: dict) -> str:
    return f"{r['scene']} x{r['scale']} {r['protocol']}"


def _fmt_protocol_row(r: dict) -> str:
    return (f"| {r['scene']} | {r['scale']} | {r['protocol']} | {r['method']} | {r['knowledge']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['sam']:.3f} | {r['ergas']:.3f} | {r['seconds']:.2f} |")


PROTOCOL_HEADER = ("| scene | scale | protocol | method | knowledge | PSNR (dB) | SSIM | SAM (deg) | ERGAS | seconds |\n"
                   "|---|---|---|---|---|---|---|---|---|---|")


def _command(args: argparse.Namespace) -> str:
    return (f"python bench/quality.py --methods {args.methods} --scales {args.scales}{' --quick' if args.quick else ''}"
            f"{f' --scenes {args.scenes}' if getattr(args, 'scenes', '') else ''}"
            f"{f' --protocol {args.protocol}' if getattr(args, 'protocol', None) else ''}"
            f"{f' --model {args.model}' if args.model else ''}")


CHOICE_TIE_DB = 0.1
"""True PSNRs within this (dB) of the best candidate's count as a right choice of the check."""


def check_choices(rows: list[dict]) -> list[dict]:
    """How the Super-resolve check chose, per cell where both ``hsrdiff`` (check on) and ``hsrdiff_model`` (check off)
    ran with the same knowledge: the candidates' true scores (the model's own result, and each classical method with
    the same knowledge), the truly best by PSNR, what the check wrote, and its regret (dB, best - written)."""
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r["scene"], r["scale"], r["protocol"], r["knowledge"])
        cells.setdefault(key, {})[r["method"]] = r
    out = []
    for key, by in cells.items():
        if "hsrdiff" not in by or "hsrdiff_model" not in by:
            continue
        cand = {"model": by["hsrdiff_model"]} | {m: r for m, r in by.items() if not METHODS[m].needs_model}
        best = max(cand, key=lambda m: cand[m]["psnr"])
        got = by["hsrdiff"]
        regret = cand[best]["psnr"] - got["psnr"]
        out.append({"scene": key[0], "scale": key[1], "protocol": key[2], "knowledge": key[3], "chosen": got.get("chosen"),
                    "truly_best": best, "regret_db": regret, "right": regret <= CHOICE_TIE_DB,
                    "written_psnr": got["psnr"], "written_sam": got["sam"], "model_psnr": cand["model"]["psnr"],
                    "model_sam": cand["model"]["sam"], "best_psnr": cand[best]["psnr"]})
    return out


def write_protocol_results(out: Path, rows: list[dict], args: argparse.Namespace, scenes: list[Scene], protocols: list[str],
                           scales: list[int], wall: float, skipped: list[dict] | None = None) -> None:
    """``out.md`` (the summary, what estimation buys, the estimates, every row) and ``out.json``."""
    summary = summarise(rows)
    gains = {"estimated over nominal": knowledge_gain(rows, "estimated", "nominal"),
             "true over estimated": knowledge_gain(rows, "true", "estimated")}
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": wall,
        "command": _command(args),
        "protocols": {name: {str(s): {"degradation": protocol(name, s).describe(s),
                                      "true_psf": protocol(name, s).true_psf(s).describe()} for s in scales}
                      for name in protocols},
        "scenes": [asdict(s) for s in scenes],
        "summary": summary,
        "knowledge_gain_db": {name: {f"{m} {p}": v for (m, p), v in g.items()} for name, g in gains.items()},
        "results": margins(rows),
        "check_choices": check_choices(rows),
        "skipped": skipped or [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    choices = info["check_choices"]
    m = info["machine"]
    method_names = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        "# Cross-protocol fusion benchmark (reduced resolution, held-out crops)", "",
        f"Measured {info['date']} on {m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), Python {m['python']}, "
        f"numpy {m['numpy']}, OMP_NUM_THREADS={m['omp_num_threads']}; wall time {wall:.0f} s. Command: `{info['command']}`.", "",
        "Each pair is made from the reference (the crop without bad, nodata and constant bands) by "
        "`core.sensor.protocols` (an explicit kernel, mirror boundary, decimation at the protocol's phase; the SRF "
        "perturbed, then MSI gain/offset, then noise with seed 0). Every classical method runs three times: **true** (the "
        "protocol's PSF as a kernel of our convention, `Degradation.true_psf`, and the true response times the MSI "
        "gains), **estimated** (the registration offset and PSF width of `core.jobs.common.estimate_degradation`, "
        "then the NNLS response through that PSF; its seconds include the estimation) and **nominal** (centred "
        "Gaussian, FWHM = scale, the sensor's nominal response). HSR-Diff cannot take the truth: it runs with "
        "Super-resolve's default `--degradation estimate` (**estimated**) and with `--degradation model` (**nominal**). "
        "Metrics drop a border of scale px; PSNR is the mean band PSNR.", "",
        "## Protocols", "",
        "| protocol | scale | degradation | in our convention (footprint offset, PSF) |", "|---|---|---|---|",
        *[f"| {name} | {s} | {d['degradation']} | {d['true_psf']} |" for name, by_scale in info["protocols"].items()
          for s, d in by_scale.items()], "",
        "## Worst cells", "",
        "Margin over the best classical method of the same cell (scene x scale x protocol), positive = better: "
        "PSNR in dB (row - best), SAM in degrees (best - row), against the classical runs with the same knowledge "
        "(`true`, `estimated` or `nominal`); the last column against every classical run of the cell, those told the "
        "truth included.", "",
        "| method | knowledge | model | cells | worst PSNR margin (dB) | cell (vs) | PSNR there | worst SAM margin (deg) "
        "| cell (vs) | SAM there | mean PSNR margin (dB) | worst PSNR margin vs any classical run (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {s['method']} | {s['knowledge']} | {s['model'] or 'all'} | {s['cells']} | {s['worst_psnr_margin']:+.2f} | "
          f"{s['worst_psnr_cell']} ({s['worst_psnr_vs']}) | {s['worst_psnr']:.2f} | {s['worst_sam_margin']:+.3f} | "
          f"{s['worst_sam_cell']} ({s['worst_sam_vs']}) | {s['worst_sam']:.3f} | {s['mean_psnr_margin']:+.2f} | "
          f"{s['worst_psnr_margin_any']:+.2f} ({s['worst_psnr_any_cell']}, {s['worst_psnr_any_vs']}) |"
          for s in summary], "",
    ]
    if choices:
        right = sum(c["right"] for c in choices)
        acted = [c for c in choices if c["chosen"] != "model"]
        lines += [
            "## The check against classical methods (Super-resolve's default)", "",
            f"`hsrdiff` is the product's output (`check=best`), `hsrdiff_model` the model's own (`check=off`). Per cell: "
            f"what the check wrote, and the truly best of the model and the classical methods with the same knowledge "
            f"(by PSNR against the reference). Right = the written result within {CHOICE_TIE_DB} dB of that best: "
            f"**{right}/{len(choices)} ({100 * right / len(choices):.0f} %)**; the check replaced the model in "
            f"{len(acted)} cell(s); worst regret {max(c['regret_db'] for c in choices):+.2f} dB. A pair smaller than "
            "8 x scale LR px a side is not checked (the model's result is written).", "",
            "| scene | scale | protocol | knowledge | written | truly best | regret (dB) | written PSNR / SAM | model PSNR / SAM |",
            "|---|---|---|---|---|---|---|---|---|",
            *[f"| {c['scene']} | {c['scale']} | {c['protocol']} | {c['knowledge']} | {c['chosen']} | {c['truly_best']} | "
              f"{c['regret_db']:+.2f} | {c['written_psnr']:.2f} / {c['written_sam']:.3f} | {c['model_psnr']:.2f} / "
              f"{c['model_sam']:.3f} |" for c in choices], ""]
    lines += [
        "## What estimation buys", "",
        "PSNR (estimated) - PSNR (nominal), then PSNR (true) - PSNR (estimated), in dB: mean over the scene x scale "
        "cells (worst cell).", "",
    ]
    for name, g in gains.items():
        lines += [f"{name}:", "", "| protocol | " + " | ".join(method_names) + " |", "|---|" + "---|" * len(method_names),
                  *[f"| {p} | " + " | ".join(f"{np.mean(g[(mn, p)]):+.2f} ({min(g[(mn, p)]):+.2f})" if (mn, p) in g else "-"
                                             for mn in method_names) + " |" for p in protocols], ""]
    lines += [
        "## What each run was given", "",
        "| scene | scale | protocol | true | classical, estimated | HSR-Diff, estimated |", "|---|---|---|---|---|---|",
    ]
    seen = {}
    for r in rows:
        key = (r["scene"], r["scale"], r["protocol"])
        entry = seen.setdefault(key, {"true": r["true_psf"], "classical": "", "model": ""})
        if r["knowledge"] == "estimated":
            entry["model" if METHODS[r["method"]].needs_model else "classical"] = r["given"]
    lines += [f"| {k[0]} | {k[1]} | {k[2]} | {v['true']} | {v['classical']} | {v['model'] or '-'} |" for k, v in seen.items()]
    lines += ["", "## Every run", "", PROTOCOL_HEADER, *[_fmt_protocol_row(r) for r in rows], "", "Scenes:", "",
              *[f"- `{s.name}`: `{s.file}` rows {s.rows[0]}-{s.rows[1]}, cols {s.cols[0]}-{s.cols[1]}, MSI = {s.sensor} "
                f"{', '.join(s.msi_bands or default_msi_bands(s.sensor))}.{' **Held out from training.**' if s.held_out else ''} "
                f"{s.note}" for s in scenes], ""]
    model_rows = [r for r in rows if r.get("model")]
    if model_rows:
        lines += ["Models:", "", *sorted({f"- `{r['method']}` on `{r['scene']}` x{r['scale']}: `{r['model']}` ({r['model_info']}; "
                                         f"{r['sampler']})" for r in model_rows}), ""]
    if skipped:
        lines += ["Skipped:", "", *[f"- {_fmt_skip(k)}" for k in skipped], ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def _fmt_skip(k: dict) -> str:
    where = k["scene"] + (f" x{k['scale']}" if k["scale"] else "") + (f" {k['method']}" if k["method"] else "")
    return f"{where}: {k['reason']}"


HEADER = "| scene | scale | method | PSNR (dB) | SSIM | SAM (deg) | ERGAS | seconds |\n|---|---|---|---|---|---|---|---|"


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write_results(out: Path, rows: list[dict], args: argparse.Namespace, scenes: list[Scene], wall: float,
                  skipped: list[dict] | None = None) -> None:
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": wall,
        "protocol": "Wald: reference = crop without bad/nodata/constant bands; LR = Gaussian PSF (FWHM = scale) "
                    "+ decimation; HR-MSI = reference through the real SRF; noise-free; every method is given the "
                    "true SRF and PSF (so MTF-GLP-HS uses the exact MTF); metrics with a border of scale px; "
                    "PSNR = mean band PSNR with the band max as peak; SSIM Gaussian (Wang 2004)",
        "args": {"methods": args.methods, "scales": args.scales, "quick": args.quick, "model": args.model,
                 "scenes": getattr(args, "scenes", ""), "steps": getattr(args, "steps", None),
                 "sampler": getattr(args, "sampler", None)},
        "scenes": [asdict(s) for s in scenes],
        "results": rows,
        "skipped": skipped or [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    m = info["machine"]
    lines = [
        "# Fusion quality benchmark (reduced resolution, real scenes)", "",
        f"Measured {info['date']} on {m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), "
        f"Python {m['python']}, numpy {m['numpy']}, OMP_NUM_THREADS={m['omp_num_threads']}; "
        f"wall time {wall:.0f} s. Command: `python bench/quality.py --methods {args.methods} --scales {args.scales}"
        f"{' --quick' if args.quick else ''}{f' --scenes {args.scenes}' if getattr(args, 'scenes', '') else ''}"
        f"{f' --model {args.model}' if args.model else ''}`.", "",
        f"Protocol: {info['protocol']}.", "",
        HEADER, *[_fmt_row(r) for r in rows], "",
        "Scenes:", "",
        *[f"- `{s.name}`: `{s.file}` rows {s.rows[0]}-{s.rows[1]}, cols {s.cols[0]}-{s.cols[1]}, MSI = {s.sensor} "
          f"{', '.join(s.msi_bands or default_msi_bands(s.sensor))}.{' **Held out from training.**' if s.held_out else ''} "
          f"{s.note}" for s in scenes],
        "",
    ]
    model_rows = [r for r in rows if r.get("model")]
    if model_rows:
        lines += ["Models:", "", *sorted({f"- `{r['method']}` on `{r['scene']}` x{r['scale']}: `{r['model']}` ({r['model_info']}; "
                                         f"{r['sampler']})" for r in model_rows}), ""]
    if skipped:
        lines += ["Skipped:", "", *[f"- {_fmt_skip(k)}" for k in skipped], ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(BASELINES))
    ap.add_argument("--scales", default="4,8")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (default: all, or the quick subset)")
    ap.add_argument("--quick", action="store_true", help="two scenes, smaller crops (< 2 min)")
    ap.add_argument("--model", default=None, help="model path(s) for methods that need one, comma-separated")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps of model-based methods (default: the plugin's)")
    ap.add_argument("--sampler", choices=("ddim", "ancestral"), default=None, help="sampler of model-based methods")
    ap.add_argument("--samples", type=int, default=None, help="samples averaged by model-based methods (default: the plugin's)")
    ap.add_argument("--protocol", default=None, metavar="NAME[,NAME...]",
                    help=f"cross-protocol benchmark: 'all' or some of {', '.join(PROTOCOLS)} (core.sensor.protocols)")
    ap.add_argument("--out", default=None, help="output path without suffix (default: bench/results/quality, or "
                                                "bench/results/quality_protocols with --protocol)")
    args = ap.parse_args(argv)
    protocols = None
    if args.protocol:
        protocols = list(PROTOCOLS) if args.protocol == "all" else [p for p in args.protocol.split(",") if p]
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            ap.error(f"unknown protocols {unknown}; known: all, {', '.join(PROTOCOLS)}")
    out = Path(args.out or ROOT / "bench" / "results" / ("quality_protocols" if protocols else "quality"))
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if any(METHODS[m].needs_model for m in methods) and not args.model:
        ap.error("--model is required for " + ", ".join(m for m in methods if METHODS[m].needs_model))
    scales = [int(s) for s in args.scales.split(",") if s]
    names = [s for s in args.scenes.split(",") if s]
    scenes = [s for s in SCENES if (s.name in names if names else (s.quick or not args.quick))]
    if names and len(scenes) != len(names):
        ap.error(f"unknown scenes; known: {[s.name for s in SCENES]}")
    print(PROTOCOL_HEADER if protocols else HEADER, flush=True)
    t0 = time.perf_counter()
    skipped: list[dict] = []
    model_opts = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("samples", args.samples)) if v is not None}
    log = lambda s: print(s, flush=True)  # noqa: E731
    if protocols:
        rows = run_protocols(methods, scales, scenes, protocols, args.quick, args.model, log=log, model_opts=model_opts,
                             skipped=skipped)
        write_protocol_results(out, rows, args, scenes, protocols, scales, time.perf_counter() - t0, skipped)
    else:
        rows = run(methods, scales, scenes, args.quick, args.model, log=log, model_opts=model_opts, skipped=skipped)
        write_results(out, rows, args, scenes, time.perf_counter() - t0, skipped)
    print(f"wrote {out.with_suffix('.md')} and .json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
