"""Training data for the CDFormer.

Two ways to get ``(Z0, lr_up, msi, lr)`` training quadruples (all ``(bands, rows, cols)`` float32):

a. ``supervised``: reference HR-HSI cubes; LR-HSI and HR-MSI are simulated once per scene with
   ``core.sensor.simulate_pair`` (PSF blur + decimation by ``scale``, spectral response ``R``,
   optional noise), ``lr_up = core.conditioning.base_image(...)`` (bicubic by default, ``data.base``).
b. ``self_supervised`` (Wald's protocol): a real co-registered LR-HSI ``Y`` / HR-MSI ``X`` pair with
   ratio ``scale`` (checked against the files, ``check_pair_scale``) and no reference.  Both are
   degraded by ``scale`` again (``core.sensor.degrade_spatial``); the network learns
   ``(D Y, D X) -> Y`` and is applied at the original scale (scale invariance assumption of Wald's
   protocol).  With ``degradation: estimate`` (``core.jobs.train``'s default) ``D`` is the pair's own PSF,
   offset included, estimated from it as Super-resolve estimates it (:func:`_pair_degradation`).

Random square crops (offsets on the ``scale`` grid so that the LR crop is exactly the crop's
degradation, up to the reflect padding at crop borders used by ``D`` in the loss), random
flips and rot90 applied identically to the four arrays.  Crops overlapping the held-out
validation square or containing invalid (nodata) pixels are rejected.  ``val_region: auto`` places
the held-out square inside the first scene (:func:`auto_val_region`); :meth:`DataBundle.largest_patch`
says which patch sizes fit beside it (the trainer reduces its patches to that).  Per-band
``BandNormalization``s of the HSI and the MSI are fitted on the training pixels only and stored
in the checkpoint.  Bands flagged bad (``bbl = 0``, e.g. EnMAP's water-vapour bands) are dropped;
the kept band indices are recorded in ``DataBundle.describe()``.

Files: GeoTIFF/ENVI through ``core.raster_io`` (imported lazily: this module never imports GDAL at
import time), or ``.npy`` ``(bands, rows, cols)`` / ``.npz`` with ``cube`` (or ``hsi``) and optional
``wavelengths``, ``fwhm``, ``bad_bands`` arrays - handy on a GPU box without GDAL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.conditioning import base_image
from core.normalization import BandNormalization

__all__ = ["Cube", "load_cube", "Scene", "DataBundle", "build_data", "srf_matrix", "psf_kernel", "sensor_module",
           "check_pair_scale", "patch_multiple", "crop_positions", "largest_patch", "auto_val_region", "MIN_PAIR_LR"]

MIN_PAIR_LR = 16
"""A real pair needs at least ``MIN_PAIR_LR x MIN_PAIR_LR`` LR-HSI pixels of valid data to be trained on."""


# ----------------------------------------------------------------------------- sensor access


def sensor_module():
    """``core.sensor`` (a colleague's module); raises a clear error if it is not there."""
    try:
        import core.sensor as sensor
    except ImportError as exc:  # pragma: no cover - only while core/sensor is being written
        raise ImportError("core.sensor is required for simulating training pairs") from exc
    return sensor


def psf_kernel(scale: int, sigma: float | None = None) -> np.ndarray:
    """The ``(k, k)`` Gaussian PSF of ``core.sensor`` (FWHM = scale by default)."""
    return np.asarray(sensor_module().gaussian_psf(scale, sigma=sigma), dtype=np.float32)


def srf_matrix(srf: str, wavelengths: np.ndarray | None, fwhm: np.ndarray | None = None, bands=None):
    """``(R (msi_bands, hsi_bands) float32, msi band names)`` from ``core.sensor.spectral_response``.

    ``srf`` is a sensor name (``nikon_d700``, ``sentinel2``, ...) or an SRF CSV path; ``bands``
    defaults to ``core.sensor.default_msi_bands(srf)`` (e.g. Sentinel-2's 10 land bands at 10/20 m).
    """
    sensor = sensor_module()
    if wavelengths is None:
        raise ValueError("simulating an MSI needs the HSI wavelengths")
    if bands is None:
        bands = list(sensor.default_msi_bands(srf))
    resp = sensor.spectral_response(srf, wavelengths, fwhm_nm=fwhm, bands=bands)
    return np.asarray(resp.matrix, dtype=np.float32), list(resp.band_names)


# ----------------------------------------------------------------------------- reading


@dataclass
class Cube:
    data: np.ndarray  # (bands, rows, cols) float32, NaN = nodata
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    band_names: list[str] = field(default_factory=list)


def load_cube(path: str | Path) -> Cube:
    """Read a cube from GeoTIFF/ENVI (via ``core.raster_io``), ``.npy`` or ``.npz``."""
    path = Path(path)
    if path.suffix == ".npy":
        return Cube(np.load(path).astype(np.float32))
    if path.suffix == ".npz":
        z = np.load(path)
        key = "cube" if "cube" in z else "hsi"
        get = lambda k: np.asarray(z[k]) if k in z else None  # noqa: E731
        bb = get("bad_bands")
        return Cube(z[key].astype(np.float32), get("wavelengths"), get("fwhm"), None if bb is None else bb.astype(bool))
    from core.raster_io import read_raster

    arr, meta = read_raster(path)
    return Cube(arr.astype(np.float32), meta.wavelengths, meta.fwhm, meta.bad_bands, list(meta.band_names))


def _grid(path: str | Path) -> tuple[int, int, tuple[float, float] | None]:
    """``(rows, cols, (pixel width, pixel height) in map units, or None for a file without georeference)``."""
    path = Path(path)
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        return int(shape[-2]), int(shape[-1]), None
    if path.suffix == ".npz":
        with np.load(path) as z:
            shape = z["cube" if "cube" in z else "hsi"].shape
        return int(shape[-2]), int(shape[-1]), None
    from core.raster_io import read_meta

    m = read_meta(path)
    plain = tuple(float(v) for v in m.geotransform) == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # GDAL's "no georeference"
    return m.rows, m.cols, None if plain else m.pixel_size


def _common_windows(lr_path, msi_path, lr_name=None, msi_name=None):
    """``(lr_window, msi_window)`` of a georeferenced pair's common area (:func:`core.pairing.check_pair`), or None
    for files without a georeference (arrays, plain images)."""
    if Path(lr_path).suffix.lower() in (".npy", ".npz") or not all(_grid(q)[2] for q in (lr_path, msi_path)):
        return None
    from core.pairing import check_pair

    geom = check_pair(lr_path, msi_path, lr_name=lr_name, msi_name=msi_name)
    return geom.lr_window, geom.msi_window


def check_pair_scale(lr_path: str | Path, msi_path: str | Path, scale: int, lr_name: str | None = None,
                     msi_name: str | None = None, rel_tol: float = 1e-3) -> float:
    """The scale of a real LR-HSI / HR-MSI pair (LR pixel size over MSI pixel size); ``ValueError`` unless it is ``scale``.

    With a georeference on both files the ratio is that of the pixel sizes (map units, x and y each within
    ``rel_tol`` of ``scale``); otherwise (``.npy``/``.npz``, images without georeference) that of the raster
    sizes: the MSI must have ``scale`` times the LR-HSI's rows and columns, plus less than one LR pixel.
    ``lr_name`` / ``msi_name`` name the layers in the message (file names by default).
    """
    ln = f"LR-HSI layer '{lr_name or Path(lr_path).name}'"
    mn = f"HR-MSI layer '{msi_name or Path(msi_path).name}'"
    scale = int(scale)
    lr_rows, lr_cols, lr_px = _grid(lr_path)
    ms_rows, ms_cols, ms_px = _grid(msi_path)
    if lr_px and ms_px:
        rx, ry = lr_px[0] / ms_px[0], lr_px[1] / ms_px[1]
        ok = abs(rx - scale) <= rel_tol * scale and abs(ry - scale) <= rel_tol * scale
        sizes = f"{ln}: {lr_px[0]:g} x {lr_px[1]:g}, {mn}: {ms_px[0]:g} x {ms_px[1]:g} map units per pixel"
        what = "pixel-size ratio"
    else:
        rx, ry = ms_cols / lr_cols, ms_rows / lr_rows
        ok = ms_cols // scale == lr_cols and ms_rows // scale == lr_rows
        sizes = f"{ln}: {lr_cols} x {lr_rows}, {mn}: {ms_cols} x {ms_rows} pixels; no georeference on both, so the sizes"
        what = "size ratio"
    if ok:
        return float(scale)
    ratio = f"{rx:.4g}" if abs(rx - ry) <= rel_tol * max(rx, ry) else f"{rx:.4g} in x and {ry:.4g} in y"
    whole = round(rx)
    hint = (f"set the scale to {whole}" if abs(rx - ry) <= rel_tol * max(rx, ry) and abs(rx - whole) <= rel_tol * rx
            and whole >= 2 else f"resample the HR-MSI to 1/{scale} of the LR-HSI's pixel size")
    raise ValueError(f"the pair's {what} is {ratio} ({sizes}) but the requested scale is {scale}: "
                     f"training on it would learn the wrong scale; {hint}")


# ----------------------------------------------------------------------------- scenes and sampling


@dataclass
class Scene:
    """One training scene: reference, its conditioning base, the MSI and the LR, physical units."""

    ref: np.ndarray  # (b, H, W)
    lr_up: np.ndarray  # (b, H, W)
    msi: np.ndarray  # (m, H, W)
    lr: np.ndarray  # (b, H/s, W/s)
    valid: np.ndarray  # (H, W) bool, False on nodata and on the held-out square
    window: bool = False  # a sub-window copy (``base_windows``): sampled, but left out of every statistic


def patch_multiple(scale: int, window: int = 8) -> int:
    """lcm(``window``, ``scale``): training patches and held-out squares, in pixels of the training grid, are
    multiples of it (whole attention windows of the model, whole LR pixels)."""
    scale, window = int(scale), int(window)
    return scale * window // math.gcd(scale, window)


def _bad_table(valid: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1)`` int64 summed-area table of the False pixels of ``valid`` ``(H, W)``."""
    t = np.zeros((valid.shape[0] + 1, valid.shape[1] + 1), np.int64)
    t[1:, 1:] = np.cumsum(np.cumsum(~np.asarray(valid, bool), axis=0), axis=1)
    return t


def _positions(table: np.ndarray, patch: int, scale: int) -> np.ndarray:
    """``(n, 2)`` top-left corners on the ``scale`` grid of the ``patch x patch`` crops with no False pixel (``table``
    from :func:`_bad_table`)."""
    h, w = table.shape[0] - 1, table.shape[1] - 1
    if patch < 1 or patch > h or patch > w:
        return np.zeros((0, 2), np.int64)
    i = np.arange(0, h - patch + 1, scale)[:, None]
    j = np.arange(0, w - patch + 1, scale)[None, :]
    bad = table[i + patch, j + patch] - table[i, j + patch] - table[i + patch, j] + table[i, j]
    r, c = np.nonzero(bad == 0)
    return np.stack([i[r, 0], j[0, c]], axis=1)


def crop_positions(valid: np.ndarray, patch: int, scale: int) -> np.ndarray:
    """``(n, 2)`` int: the top-left corners (multiples of ``scale``) of every ``patch x patch`` crop lying wholly on
    True pixels of ``valid`` ``(H, W)``."""
    return _positions(_bad_table(valid), int(patch), int(scale))


def largest_patch(valid: np.ndarray, scale: int, multiple: int, limit: int | None = None) -> int:
    """The largest multiple of ``multiple`` (pixels, at most ``limit``) of which a crop on the ``scale`` grid lies
    wholly on True pixels of ``valid`` ``(H, W)``; 0 when not even ``multiple`` fits."""
    table = _bad_table(valid)
    top = min(valid.shape) if limit is None else min(int(limit), *valid.shape)
    for p in range(top // multiple * multiple, 0, -multiple):
        if len(_positions(table, p, scale)):
            return p
    return 0


def auto_val_region(valid: np.ndarray, scale: int, multiple: int, patch: int | None = None, fraction: float = 0.25,
                    max_side: int = 128, candidates: int = 24) -> list[int] | None:
    """``[row, col, size]`` (pixels of the training grid) of a square to hold out for validation inside the training
    area ``valid`` ``(H, W)``, or None when no square of ``multiple`` pixels lies wholly on valid pixels.

    Size: the largest multiple of ``multiple`` whose area is at most ``fraction`` of the valid pixels and whose side
    is at most ``max_side`` (at least ``multiple``), made smaller by steps of ``multiple``, down to half of it, while
    ``patch x patch`` training crops (default ``multiple``) would not fit beside it.  Place: on the ``scale`` grid,
    wholly on valid pixels, nearest an image corner first (bottom right first among equals): a corner square leaves
    the largest training area in one piece.  When no size lets ``patch`` fit, the smallest size at the place (among
    the first ``candidates``) that leaves room for the largest training patch, and None when even that leaves
    no training patch (a 24 x 24 px grid at scale 3, whose smallest square is all of it).  Deterministic.
    """
    valid = np.asarray(valid, bool)
    h, w = valid.shape
    patch = int(patch or multiple)
    side = int(math.isqrt(int(fraction * valid.sum())) // multiple * multiple)
    side = max(multiple, min(side, max_side // multiple * multiple, min(h, w) // multiple * multiple))
    smallest = max(multiple, side // 2 // multiple * multiple)
    table = _bad_table(valid)

    def places(size: int) -> list[tuple[int, int]]:
        ok = _positions(table, size, scale)
        key = lambda rc: (min(rc[0], h - size - rc[0]) + min(rc[1], w - size - rc[1]), -rc[0], -rc[1])  # noqa: E731
        return sorted(((int(r), int(c)) for r, c in ok), key=key)[:candidates]

    def room(r: int, c: int, size: int, limit: int) -> int:
        rest = valid.copy()
        rest[r : r + size, c : c + size] = False
        return largest_patch(rest, scale, multiple, limit)

    for size in range(side, smallest - 1, -multiple):
        for r, c in places(size):
            if room(r, c, size, patch) >= patch:
                return [r, c, size]
    spots = places(smallest)
    if not spots:
        return None
    left, (r, c) = max(((room(r, c, smallest, patch), (r, c)) for r, c in spots), key=lambda x: x[0])  # first of equals
    return [r, c, smallest] if left else None  # None: a square would leave nothing to train on


def _augment(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(1, 2))
        if flip:
            a = a[:, :, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


@dataclass
class DataBundle:
    scenes: list[Scene]
    scale: int
    hsi_norm: BandNormalization
    msi_norm: BandNormalization
    srf: np.ndarray | None
    psf: np.ndarray | None
    psf_sigma: float | None
    wavelengths: np.ndarray | None
    fwhm: np.ndarray | None
    msi_band_names: list[str]
    band_indices: list[int]
    val: dict | None  # physical units: ref, lr_up, msi, lr (each (bands, S, S))
    description: dict
    scene_text: list[str] = field(default_factory=list)  # per primary scene: its size in words, for messages
    _crops: dict = field(default_factory=dict, repr=False)  # patch -> [(scene index, (row, col))], see _any_crop

    @property
    def hsi_bands(self) -> int:
        return int(self.scenes[0].ref.shape[0])

    @property
    def msi_bands(self) -> int:
        return int(self.scenes[0].msi.shape[0])

    def sample_batch(self, rng: np.random.Generator, batch: int, patch: int, augment: bool = True) -> dict[str, torch.Tensor]:
        """Normalised torch tensors ``z0``, ``lr_up``, ``msi`` ``(batch, *, patch, patch)`` and ``lr``."""
        s = self.scale
        if patch % s:
            raise ValueError(f"patch {patch} must be a multiple of the scale {s}")
        out = {"z0": [], "lr_up": [], "msi": [], "lr": []}
        for _ in range(batch):
            for _attempt in range(1000):
                sc = self.scenes[int(rng.integers(len(self.scenes)))]
                h, w = sc.ref.shape[1:]
                if h < patch or w < patch:
                    continue
                i = int(rng.integers(0, (h - patch) // s + 1)) * s
                j = int(rng.integers(0, (w - patch) // s + 1)) * s
                if sc.valid[i : i + patch, j : j + patch].all():
                    break
            else:
                sc, i, j = self._any_crop(rng, patch)
            arrs = [
                sc.ref[:, i : i + patch, j : j + patch],
                sc.lr_up[:, i : i + patch, j : j + patch],
                sc.msi[:, i : i + patch, j : j + patch],
                sc.lr[:, i // s : (i + patch) // s, j // s : (j + patch) // s],
            ]
            if augment:
                arrs = _augment(arrs, int(rng.integers(4)), bool(rng.integers(2)))
            out["z0"].append(self.hsi_norm.apply(arrs[0]))
            out["lr_up"].append(self.hsi_norm.apply(arrs[1]))
            out["msi"].append(self.msi_norm.apply(arrs[2]))
            out["lr"].append(self.hsi_norm.apply(arrs[3]))
        return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}

    def _any_crop(self, rng: np.random.Generator, patch: int) -> tuple[Scene, int, int]:
        """``(scene, row, col)`` drawn uniformly among all valid ``patch x patch`` crops of all scenes: for when
        rejection sampling fails because few positions are valid (a small pair beside its held-out square)."""
        if patch not in self._crops:
            self._crops[patch] = [(k, (int(r), int(c))) for k, sc in enumerate(self.scenes)
                                  for r, c in crop_positions(sc.valid, patch, self.scale)]
        crops = self._crops[patch]
        if not crops:
            raise RuntimeError(f"no {patch}x{patch} crop of training pixels in any scene (held-out square too big?)")
        k, (i, j) = crops[int(rng.integers(len(crops)))]
        return self.scenes[k], i, j

    def primary_scenes(self) -> list[Scene]:
        """The scenes read from the files (not the sub-window copies of ``base_windows`` and the other augmentations)."""
        return [sc for sc in self.scenes if not sc.window]

    def largest_patch(self, multiple: int, limit: int) -> tuple[int, int]:
        """``(patch, scene)``: ``limit`` when its crops fit the training pixels of every primary scene (outside the
        held-out squares and nodata), else the largest multiple of ``multiple`` below it that does (0 when not even
        ``multiple`` does), and the index of the primary scene that limits it."""
        best, which = int(limit), 0
        for k, sc in enumerate(self.primary_scenes()):
            if best and not len(crop_positions(sc.valid, best, self.scale)):
                best, which = largest_patch(sc.valid, self.scale, multiple, best), k
        return best, which

    def validation_batch(self) -> dict[str, torch.Tensor] | None:
        if self.val is None:
            return None
        return {
            "lr_up": torch.from_numpy(self.hsi_norm.apply(self.val["lr_up"])[None]),
            "msi": torch.from_numpy(self.msi_norm.apply(self.val["msi"])[None]),
        }

    def describe(self) -> dict:
        return dict(self.description, band_indices=self.band_indices)

    def _residual_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per band: sum of squares and count of finite ``z0 - lr_up`` over the training pixels (normalised units)."""
        total, count = np.zeros(self.hsi_bands), np.zeros(self.hsi_bands)
        for sc in self.scenes:
            if sc.window:
                continue
            d = (self.hsi_norm.apply(sc.ref) - self.hsi_norm.apply(sc.lr_up))[:, sc.valid].astype(np.float64)
            ok = np.isfinite(d)
            total += np.square(np.where(ok, d, 0.0)).sum(axis=1)
            count += ok.sum(axis=1)
        return total, count

    def band_residual_rms(self) -> np.ndarray:
        """``(bands,)`` RMS of ``z0 - lr_up`` per band over the training pixels, normalised units."""
        total, count = self._residual_sums()
        return np.sqrt(total / np.maximum(count, 1))

    def residual_rms(self) -> float:
        """RMS of ``z0 - lr_up`` (reference minus conditioning base) over the training pixels, normalised units."""
        total, count = self._residual_sums()
        return float(np.sqrt(total.sum() / count.sum())) if count.sum() else 1.0


def _good_band_index(cube: Cube) -> np.ndarray:
    good = np.ones(cube.data.shape[0], bool) if cube.bad_bands is None else ~np.asarray(cube.bad_bands, bool)
    # a band with no finite pixel at all is unusable too
    good &= np.isfinite(cube.data).reshape(cube.data.shape[0], -1).any(axis=1)
    return np.flatnonzero(good)


def _fill_nodata(cube: np.ndarray) -> np.ndarray:
    """``cube`` ``(b, H, W)`` float32 with NaNs replaced by their band's mean (those pixels are masked, not trained on)."""
    return np.where(np.isfinite(cube), cube, np.nanmean(cube, axis=(1, 2), keepdims=True)).astype(np.float32)


def _random_window(rng: np.random.Generator, shape: tuple[int, int], scale: int, min_div: int) -> tuple[int, int, int, int]:
    """``(row, col, rows, cols)`` of a random window on the LR grid, each side ``1/min_div`` to all of ``shape``'s."""
    h, w = shape
    hh = int(rng.integers(max(1, -(-h // (min_div * scale))), h // scale + 1)) * scale
    ww = int(rng.integers(max(1, -(-w // (min_div * scale))), w // scale + 1)) * scale
    r = int(rng.integers(0, (h - hh) // scale + 1)) * scale
    c = int(rng.integers(0, (w - ww) // scale + 1)) * scale
    return r, c, hh, ww


def _simulated_scene(ref: np.ndarray, valid: np.ndarray, scale: int, srf: np.ndarray, psf: np.ndarray, base: str, psf_sigma,
                     snr_db, seed: int, window: bool = False) -> Scene:
    """A ``Scene`` from a reference ``(b, H, W)``: the LR-HSI and MSI simulated from it, then its conditioning base."""
    lr, msi = sensor_module().simulate_pair(ref, scale, srf, psf=psf, snr_db=snr_db, seed=seed)
    lr, msi = np.asarray(lr, np.float32), np.asarray(msi, np.float32)
    return Scene(ref, base_image(lr, msi, scale, base, psf_sigma), msi, lr, valid, window=window)


def _window_scenes(sc: Scene, rng: np.random.Generator, count: int, scale: int, base: str, psf_sigma) -> list[Scene]:
    """``count`` random sub-windows of ``sc`` (each side 1/2 to all of the scene's, on the LR grid), each with
    its base recomputed on the window alone.

    Why: a global base such as MTF-GLP-HS fits its regression and gains over the whole input, so the
    same pixel gets a different base in a whole scene than in a crop of it. Inference computes the
    base on whatever area the user gives; training on whole-scene bases only teaches corrections of
    one extent's errors, which do not transfer (measured on the CAVE held-out quadrant).
    """
    out = []
    for _ in range(100 * max(count, 0)):
        if len(out) == count:
            break
        r, c, hh, ww = _random_window(rng, sc.valid.shape, scale, 2)
        valid = sc.valid[r : r + hh, c : c + ww]
        if valid.mean() < 0.5:
            continue
        lr = sc.lr[:, r // scale : (r + hh) // scale, c // scale : (c + ww) // scale]
        msi = sc.msi[:, r : r + hh, c : c + ww]
        out.append(Scene(sc.ref[:, r : r + hh, c : c + ww], base_image(lr, msi, scale, base, psf_sigma), msi, lr, valid,
                         window=True))
    return out


def random_spectral_gain(wavelengths: np.ndarray, rng: np.random.Generator, bumps: int = 3) -> np.ndarray:
    """A smooth positive gain ``(bands,)``: ``exp`` of a few random Gaussian bumps in wavelength plus a level.

    Bump centres are uniform over the band range, widths 10-40 % of it, log-amplitudes within +-0.7; the
    level (illumination) within +-0.3 in log.  Multiplying a reflectance cube by it turns a red object into
    an orange, green or blue one while keeping every spatial structure and every spectrum physically smooth.
    """
    wl = np.asarray(wavelengths, np.float64)
    span = max(float(wl.max() - wl.min()), 1e-6)
    log_g = np.full(wl.shape, rng.uniform(-0.3, 0.3))
    for _ in range(bumps):
        centre = rng.uniform(wl.min(), wl.max())
        width = rng.uniform(0.1, 0.4) * span
        log_g += rng.uniform(-0.7, 0.7) * np.exp(-0.5 * ((wl - centre) / width) ** 2)
    return np.exp(log_g).astype(np.float32)


def _spectral_copies(sc: Scene, rng: np.random.Generator, count: int, scale: int, srf: np.ndarray, psf: np.ndarray,
                     wavelengths: np.ndarray, base: str, psf_sigma, snr_db, seed: int) -> list[Scene]:
    """``count`` recoloured sub-windows of ``sc`` (``data.spectral_augment``).

    Each window (each side 1/4 to all of the scene's, on the LR grid) lies wholly on training pixels, so no
    held-out or nodata pixel enters it.  Its reference is multiplied by ``random_spectral_gain``, and the
    LR-HSI, the MSI and the base are simulated again from that window alone, exactly as for a real pair.
    Why: one CAVE scene has a handful of object colours; corrections learned on them did not transfer to
    the held-out quadrant's other colours.
    """
    out = []
    for r, c, hh, ww in _clean_windows(sc, rng, count, scale, 4):
        ref = sc.ref[:, r : r + hh, c : c + ww] * random_spectral_gain(wavelengths, rng)[:, None, None]
        out.append(_simulated_scene(ref, np.ones((hh, ww), bool), scale, srf, psf, base, psf_sigma, snr_db, seed + len(out),
                                    window=True))
        if len(out) == count:
            break
    return out


def _clean_windows(sc: Scene, rng: np.random.Generator, count: int, scale: int, min_div: int):
    """Random windows of ``sc`` (:func:`_random_window`) lying wholly on training pixels, drawn lazily, at most
    ``200 * count`` tries."""
    for _ in range(200 * max(count, 0)):
        r, c, hh, ww = _random_window(rng, sc.valid.shape, scale, min_div)
        if sc.valid[r : r + hh, c : c + ww].all():
            yield r, c, hh, ww


def _reader(cube: np.ndarray):
    """``read(row0, col0, rows, cols)`` of an in-memory ``(bands, rows, cols)`` cube, as
    :func:`core.jobs.common.estimate_degradation` reads a raster."""
    return lambda r, c, h, w: cube[:, r:r + h, c:c + w]


def _degraded_copies(sc: Scene, rng: np.random.Generator, count: int, scale: int, sensor: str, wavelengths: np.ndarray,
                     fwhm, msi_names: list[str], base: str, psf_sigma, noise: bool = True) -> list[Scene]:
    """``count`` sub-windows of ``sc`` (``data.degradation_augment``), each made into a pair by a new random degradation.

    Each window (each side 1/2 to all of the scene's, on the LR grid) lies wholly on training pixels. Its pair
    comes from :func:`core.sensor.protocols.random_degradation` (PSF width and shape, kernel parity and decimation
    phase, sub-pixel shift, SRF centres and widths, MSI gain and offset, noise), and its LR-HSI and base are the ones
    inference computes for such a pair on a real scene: the LR-HSI denoised when it reads noisy
    (:func:`core.sensor.noise.fit_denoiser`), the base with the pair's PSF. That PSF is the true one
    (:meth:`~core.sensor.protocols.Degradation.true_psf`), not estimated from the window: a window of a few LR
    pixels (8 x 8 at x8) is too small for :func:`core.jobs.common.estimate_degradation`, whose fallback to the
    nominal PSF left bases 3-7x worse than the nominal pair's, while on a scene of real size the estimate is within
    1 % and 0.01 px of the truth (``bench/results/registration_direction.md``).
    Why: the bundled models were trained on one degradation (centred Gaussian, FWHM = scale, the exact response)
    and lost several dB to CNMF on pairs made another way; real pairs always differ from the nominal.
    """
    from core.sensor.noise import fit_denoiser
    from core.sensor.protocols import random_degradation

    out = []
    for r, c, hh, ww in _clean_windows(sc, rng, count, scale, 2):
        ref = sc.ref[:, r : r + hh, c : c + ww]
        deg = random_degradation(rng, scale, len(msi_names))
        if not noise:
            deg = replace(deg, snr_db=None)
        lr, msi = deg.apply(ref, scale, sensor, wavelengths, fwhm, bands=msi_names, rng=rng)
        denoiser, _ = fit_denoiser(lr)
        if denoiser is not None:
            lr = denoiser.apply(lr)
        out.append(Scene(ref, base_image(lr, msi, scale, base, psf_sigma, psf=deg.true_psf(scale).kernel),
                         msi, lr, np.ones((hh, ww), bool), window=True))
        if len(out) == count:
            break
    return out


def extra_hsi_source(item) -> tuple[str, list | None]:
    """``(path, wavelength_range)`` of one ``data.extra_hsi`` entry: a path, or ``{path, wavelength_range}`` for a
    file without band wavelengths (``[first_nm, last_nm]``, centres evenly spaced)."""
    if isinstance(item, dict):
        unknown = set(item) - {"path", "wavelength_range"}
        if "path" not in item or unknown:
            raise ValueError(f"extra_hsi entry {item!r}: expected keys path and wavelength_range")
        rng = item.get("wavelength_range")
        if rng is None:
            return str(item["path"]), None
        try:
            first, last = (float(v) for v in rng)
        except (TypeError, ValueError):
            first = last = float("nan")
        if not first < last:
            raise ValueError(f"extra_hsi entry {item!r}: wavelength_range must be [first_nm, last_nm], first < last")
        return str(item["path"]), [first, last]
    return str(item), None


def _extra_scenes(paths: list, wavelengths: np.ndarray, fwhm, reference_level: float, scale: int, srf: np.ndarray,
                  psf: np.ndarray, base: str, psf_sigma, snr_db, seed: int) -> list[Scene]:
    """Scenes of other sensors (``data.extra_hsi``), resampled onto the first scene's bands, as extra training data.

    Each cube's bands are resampled with ``core.sensor.band_resampling_matrix`` (its bad bands dropped), its
    brightness is matched to the primary scenes' (99th percentile equal to ``reference_level``: a file's
    units - radiance counts, reflectance x 10000 - say nothing about the scene), then the pair is simulated
    with the primary sensor's response and PSF, as for the primary scenes.  They are sampled, never used
    for statistics (``window=True``).  Why: the 31-band case has one scene on disk; airborne cubes that
    cover 400-700 nm add materials and edges it lacks.
    """
    sensor = sensor_module()
    out = []
    for n, item in enumerate(paths):
        p, wl_range = extra_hsi_source(item)
        cube = load_cube(p)
        if (cube.wavelengths is None) == (wl_range is None):
            raise ValueError(f"{p}: extra_hsi needs band wavelengths in the file or a wavelength_range in the config, not both"
                             if wl_range is not None else f"{p}: extra_hsi needs band wavelengths in the file "
                             "(or, for a file without them, {path: ..., wavelength_range: [first_nm, last_nm]})")
        if wl_range is not None:
            # The sensor's nominal sampling: centres evenly spaced from the first to the last band.
            cube.wavelengths = np.linspace(float(wl_range[0]), float(wl_range[1]), cube.data.shape[0])
        good = _good_band_index(cube)
        try:
            w = sensor.band_resampling_matrix(np.asarray(cube.wavelengths)[good], wavelengths,
                                              None if cube.fwhm is None else np.asarray(cube.fwhm)[good], fwhm)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from exc
        data = cube.data[good]
        h, wd = (data.shape[1] // scale) * scale, (data.shape[2] // scale) * scale
        ref = np.einsum("tb,bij->tij", w, data[:, :h, :wd]).astype(np.float32)
        valid = np.isfinite(ref).all(axis=0)
        level = float(np.percentile(ref[:, valid], 99)) if valid.any() else 0.0
        if level <= 0:
            raise ValueError(f"{p}: no valid pixels with positive values after band resampling")
        ref *= reference_level / level
        out.append(_simulated_scene(_fill_nodata(ref), valid, scale, srf, psf, base, psf_sigma, snr_db, seed + n, window=True))
    return out


def _holdout_mask(shape, *regions) -> np.ndarray:
    """``(H, W)`` bool, False inside each ``[row, col, size]`` square (``None`` entries are skipped)."""
    keep = np.ones(shape, bool)
    for region in regions:
        if region:
            r, c, size = (int(v) for v in region)
            keep[r : r + size, c : c + size] = False
    return keep


def _too_small(lr_valid: np.ndarray, lr_shape: tuple, msi_shape: tuple, scale: int, ln: str, mn: str) -> None:
    """``ValueError`` naming both layers when a real pair has fewer than ``MIN_PAIR_LR x MIN_PAIR_LR`` valid LR pixels
    (``lr_valid`` ``(h, w)`` on the LR-HSI grid; ``*_shape`` the layers' ``(rows, cols)``)."""
    rows, cols = np.flatnonzero(lr_valid.any(axis=1)), np.flatnonzero(lr_valid.any(axis=0))
    span = (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)) if rows.size else (0, 0)
    n = int(lr_valid.sum())
    if n >= MIN_PAIR_LR**2 and min(span) >= MIN_PAIR_LR:
        return
    used = f"{lr_valid.shape[1]} x {lr_valid.shape[0]}"
    raise ValueError(
        f"the pair is too small to train on: {ln} is {lr_shape[1]} x {lr_shape[0]} px and {mn} {msi_shape[1]} x "
        f"{msi_shape[0]} px; of the {used} LR pixels used (cropped to a multiple of the scale {scale}) {n} are valid in both "
        f"layers, spanning {span[1]} x {span[0]}; training on a real pair needs at least {MIN_PAIR_LR} x {MIN_PAIR_LR} "
        f"LR pixels of valid data (an HR-MSI of {MIN_PAIR_LR * scale} x {MIN_PAIR_LR * scale} px at scale {scale})")


def _check_box(lr: np.ndarray, msi: np.ndarray, scale: int) -> list[int] | str:
    """``[row, col, size]`` on the LR-HSI's grid covering the crop Super-resolve's check scores a model on
    (:func:`core.referee.check_crop` on ``lr (C, h, w)`` / ``msi (M, h*scale, w*scale)``, the common area, bands
    with no valid pixel filled as the check fills them), or why there is none.

    Why: the check degrades that crop by the scale and compares each candidate with the LR-HSI there, which is
    Wald's protocol, the very task a model trained on the pair learns; trained on the crop too, the model is
    scored on what it has seen and wins the check against classical methods it is worse than.
    """
    from ..referee import check_crop

    def filled(cube):
        dead = ~np.isfinite(cube).any(axis=(1, 2))
        return _reader(np.where(dead[:, None, None], np.float32(0), cube) if dead.any() else cube)

    got, _ = check_crop(filled(lr), filled(msi), lr.shape[1:], scale)
    if isinstance(got, str):
        return f"none: {got}"
    r0, c0, crop_lr, _ = got
    return [int(r0), int(c0), int(max(crop_lr.shape[1:]))]


def _pair_degradation(lr: np.ndarray, msi: np.ndarray, scale: int, lr_name: str, msi_name: str,
                      psf_sigma: float | None, nominal: np.ndarray) -> tuple[np.ndarray, str]:
    """The real pair's own spatial degradation for Wald's protocol: the PSF (offset included) estimated from
    ``lr (C, h, w)`` / ``msi (M, h*scale, w*scale)`` by :func:`core.jobs.common.estimate_degradation`, as
    Super-resolve estimates it at inference, or ``nominal`` when it cannot be estimated or matches the nominal
    one; with that choice in words.

    Why: the reduced-scale pair must relate to its target as the real pair relates to the unknown HR-HSI.
    Degrading both images by the pair's estimated PSF puts the degraded MSI on the LR-HSI's footprints, so
    the network learns a correction registered with its MSI, as at full scale; the nominal centred PSF on
    a pair that is half an HR pixel off teaches a shifted one.
    """
    from ..jobs.common import estimate_degradation

    reg, why = estimate_degradation(_reader(lr), _reader(msi), lr.shape[1:], scale, lr_name, msi_name, psf_sigma)
    if reg is None:
        return nominal, "; ".join(why) or "the nominal one (the estimate matches it)"
    return np.asarray(reg.psf(scale), np.float32), "; ".join([f"estimated from the pair: {reg.describe()}", *why])


def build_data(cfg: dict, seed: int = 0, patch: int | None = None, window: int = 8) -> DataBundle:
    """Build the training data from the ``data`` section of a training config.

    Keys: ``mode`` (``supervised`` | ``self_supervised``), ``hsi`` (path or list of paths: the
    reference cubes, or the real LR-HSI for self-supervised), ``msi`` (self-supervised: the HR-MSI),
    ``scale``, ``srf`` (sensor name or CSV path; supervised only, optional for self-supervised),
    ``msi_bands`` (band names to keep, optional), ``psf_sigma`` (null = FWHM of ``scale``), ``degradation``
    (self-supervised: ``estimate`` = degrade the pair by its estimated PSF, or ``model``, the default here = the
    nominal centred Gaussian of ``psf_sigma``), ``hold_out_check_crop`` (self-supervised: hold out of training the
    crop Super-resolve's check will score the model on, see :func:`_check_box`, when a training patch still fits
    beside it; ``describe()["check_crop"]`` says which or why not),
    ``snr_db`` (noise of the simulated pair, null = none), ``base_windows`` (extra random sub-windows per
    scene whose base is recomputed on the window, for bases other than bicubic; 0 = none), ``spectral_augment``
    (extra recoloured sub-windows per scene, see ``_spectral_copies``; 0 = none), ``degradation_augment`` (extra
    sub-windows per scene, each a pair made with a new random degradation, see ``_degraded_copies``; 0 = none),
    ``degradation_noise`` (false: those pairs noise-free, the rest of the degradation drawn as usual; default true),
    ``extra_hsi`` (cubes of other
    sensors resampled onto the first scene's bands, see ``_extra_scenes``), ``val_region`` (``[row, col, size]`` on
    the reference grid of the first scene - for self-supervised that is the real LR-HSI's grid -
    held out from training and used for validation; ``auto`` = a square placed by :func:`auto_val_region` so
    that ``patch x patch`` training crops (multiples of ``patch_multiple(scale, window)``) still fit beside it;
    null = none), ``exclude`` (more such squares, held out
    from training but not validated on: a benchmark crop when ``val_region`` selects among checkpoints),
    ``hsi_name`` / ``msi_name`` (the layers' names in messages; file names by default).  Scenes are held in memory.

    A real pair (self-supervised) with fewer than ``MIN_PAIR_LR x MIN_PAIR_LR`` LR-HSI pixels of valid data is
    refused with both layers' sizes (``ValueError``).
    """
    mode = cfg.get("mode", "supervised")
    scale = int(cfg["scale"])
    paths = cfg["hsi"] if isinstance(cfg["hsi"], list) else [cfg["hsi"]]
    psf_sigma = cfg.get("psf_sigma")
    sensor = sensor_module()
    psf = np.asarray(sensor.gaussian_psf(scale, sigma=psf_sigma), dtype=np.float32)
    val_region = cfg.get("val_region")
    auto = val_region == "auto"
    multiple = patch_multiple(scale, window)
    exclude = [list(e) for e in cfg.get("exclude") or []]
    hsi_label = cfg.get("hsi_name")
    scene_text: list[str] = []
    base = cfg.get("base") or "bicubic"  # the conditioning image (core.conditioning)
    scenes, val = [], None
    srf = None
    msi_names: list[str] = []
    wavelengths = fwhm = None
    band_idx = None
    input_bands = 0
    degradation = None  # self-supervised with ``degradation: estimate``: the pair's estimate in words
    check_box = None  # self-supervised with ``hold_out_check_crop``: the check's crop held out, or why not

    if mode == "supervised":
        for n, p in enumerate(paths):
            cube = load_cube(p)
            idx = _good_band_index(cube)
            if band_idx is None:
                band_idx = idx
                input_bands = int(cube.data.shape[0])
                wavelengths = None if cube.wavelengths is None else np.asarray(cube.wavelengths)[idx]
                fwhm = None if cube.fwhm is None else np.asarray(cube.fwhm)[idx]
                srf, msi_names = srf_matrix(cfg["srf"], wavelengths, fwhm, cfg.get("msi_bands"))
            elif not np.array_equal(idx, band_idx):
                raise ValueError(f"{p}: band set differs from the first scene's")
            ref = cube.data[idx]
            h, w = (ref.shape[1] // scale) * scale, (ref.shape[2] // scale) * scale
            name = f"'{hsi_label}'" if hsi_label and len(paths) == 1 else f"'{Path(p).name}'"
            scene_text.append(f"the reference HR-HSI {name} is {ref.shape[2]} x {ref.shape[1]} px (trained on {w} x {h}, "
                              f"its simulated LR-HSI {w // scale} x {h // scale} px)")
            ref = ref[:, :h, :w]
            keep = np.isfinite(ref).all(axis=0)
            if n == 0:
                keep &= _holdout_mask((h, w), *exclude)
                if auto:
                    val_region = auto_val_region(keep, scale, multiple, patch)
                keep &= _holdout_mask((h, w), val_region)
            sc = _simulated_scene(_fill_nodata(ref), keep, scale, srf, psf, base, psf_sigma, cfg.get("snr_db"), seed + n)
            lr, msi = sc.lr, sc.msi
            if n == 0 and val_region:
                r, c, size = (int(v) for v in val_region)
                if r % scale or c % scale or size % scale:
                    raise ValueError("val_region row, col and size must be multiples of the scale")
                sl = (slice(None), slice(r, r + size), slice(c, c + size))
                lr_sl = (slice(None), slice(r // scale, (r + size) // scale), slice(c // scale, (c + size) // scale))
                # The base of the held-out crop is computed on the crop, as inference on that crop computes it.
                val = {"ref": ref[sl], "lr_up": base_image(lr[lr_sl], msi[sl], scale, base, psf_sigma), "msi": msi[sl],
                       "lr": lr[lr_sl]}
            scenes.append(sc)
    elif mode == "self_supervised":
        if len(paths) != 1 or not cfg.get("msi"):
            raise ValueError("self_supervised needs one 'hsi' (the real LR-HSI) and one 'msi' (the real HR-MSI)")
        check_pair_scale(paths[0], cfg["msi"], scale, hsi_label, cfg.get("msi_name"))
        ln = f"LR-HSI layer '{hsi_label or Path(paths[0]).name}'"
        mn = f"HR-MSI layer '{cfg.get('msi_name') or Path(cfg['msi']).name}'"
        y_cube, x_cube = load_cube(paths[0]), load_cube(cfg["msi"])
        lr_shape, msi_shape = y_cube.data.shape[1:], x_cube.data.shape[1:]
        band_idx = _good_band_index(y_cube)
        input_bands = int(y_cube.data.shape[0])
        y = y_cube.data[band_idx]
        x = x_cube.data
        common = _common_windows(paths[0], cfg["msi"], hsi_label, cfg.get("msi_name"))
        if common is not None:  # georeferenced: the pair's common area (core.pairing), as Super-resolve reads it
            lw, mw = common
            y = y[:, lw.row_off:lw.row_off + lw.height, lw.col_off:lw.col_off + lw.width]
            x = x[:, mw.row_off:mw.row_off + mw.height, mw.col_off:mw.col_off + mw.width]
        # On the common area as Super-resolve reads it (untrimmed, nodata kept), so both find what it finds.
        check_box = _check_box(y, x, scale) if cfg.get("hold_out_check_crop") else None
        if cfg.get("degradation", "model") == "estimate":
            psf, degradation = _pair_degradation(y, x, scale, ln, mn, psf_sigma, psf)
        wavelengths = None if y_cube.wavelengths is None else np.asarray(y_cube.wavelengths)[band_idx]
        fwhm = None if y_cube.fwhm is None else np.asarray(y_cube.fwhm)[band_idx]
        msi_names = list(x_cube.band_names) or [f"b{i + 1}" for i in range(x.shape[0])]
        if cfg.get("srf"):
            srf, msi_names = srf_matrix(cfg["srf"], wavelengths, fwhm, cfg.get("msi_bands"))
            if srf.shape[0] != x.shape[0]:
                raise ValueError(f"{mn} has {x.shape[0]} bands but the sensor response {Path(str(cfg['srf'])).name!r} has "
                                 f"{srf.shape[0]} ({', '.join(msi_names)}): choose the HR-MSI's own sensor, or none (the "
                                 "spectral-consistency loss is then off)")
        hy, wy = (y.shape[1] // scale) * scale, (y.shape[2] // scale) * scale
        y = y[:, :hy, :wy]
        x = x[:, : hy * scale, : wy * scale]
        y_valid = np.isfinite(y).all(axis=0)
        x_valid = np.isfinite(x).all(axis=0) & (np.abs(x).sum(axis=0) > 0)  # black no-data patches
        x_valid_lr = x_valid.reshape(hy, scale, wy, scale).all(axis=(1, 3))
        _too_small(y_valid & x_valid_lr, lr_shape, msi_shape, scale, ln, mn)
        scene_text.append(f"the pair's reduced-scale image is {wy} x {hy} px (Wald's protocol trains on the LR-HSI's "
                          f"grid: {ln} is {lr_shape[1]} x {lr_shape[0]} px and {mn} {msi_shape[1]} x {msi_shape[0]} px, "
                          f"both degraded by {scale}, the LR-HSI to {wy // scale} x {hy // scale} px)")
        y, x = _fill_nodata(y), _fill_nodata(x)
        lr = np.asarray(sensor.degrade_spatial(y, scale, psf=psf), np.float32)
        msi = np.asarray(sensor.degrade_spatial(x, scale, psf=psf), np.float32)
        lr_up = base_image(lr, msi, scale, base, psf_sigma, psf=psf)
        valid = y_valid & x_valid_lr & _holdout_mask((hy, wy), *exclude)
        if isinstance(check_box, list):
            beside = valid & _holdout_mask((hy, wy), check_box)
            if largest_patch(beside, scale, multiple):
                valid, exclude = beside, exclude + [check_box]
            else:
                check_box = (f"not held out: the check's crop [row {check_box[0]}, col {check_box[1]}, size "
                             f"{check_box[2]}] leaves no room for a {multiple} px training patch")
        if auto:
            val_region = auto_val_region(valid, scale, multiple, patch)
        valid &= _holdout_mask((hy, wy), val_region)
        if val_region:
            r, c, size = (int(v) for v in val_region)
            sl = (slice(None), slice(r, r + size), slice(c, c + size))
            lr_sl = (slice(None), slice(r // scale, (r + size) // scale), slice(c // scale, (c + size) // scale))
            # The pair's own base, cropped: Super-resolve computes the base over the whole pair, and a base computed on
            # the held-out square alone (a few LR px at reduced scale on a small pair) is all borders.
            val = {"ref": y[sl], "lr_up": lr_up[sl], "msi": msi[sl], "lr": lr[lr_sl]}
        scenes.append(Scene(y, lr_up, msi, lr, valid))
    else:
        raise ValueError(f"unknown data mode {mode!r}")

    extra_paths = cfg.get("extra_hsi") or []
    n_spectral = int(cfg.get("spectral_augment") or 0)
    for key, used in (("extra_hsi", extra_paths), ("spectral_augment", n_spectral)):
        if used and (mode != "supervised" or wavelengths is None):
            raise ValueError(f"{key} needs reference cubes with wavelengths (data.mode: supervised)")
    level = float(np.percentile(np.concatenate([sc.ref[:, sc.valid].ravel() for sc in scenes]), 99)) if extra_paths else 1.0
    others = _extra_scenes(list(extra_paths), wavelengths, fwhm, level, scale, srf, psf, base, psf_sigma, cfg.get("snr_db"),
                           seed + 500)

    # Sub-window copies with their own base; a bicubic base is local, so its windows would be plain crops.
    n_windows = int(cfg.get("base_windows") or 0) if base != "bicubic" else 0
    windows = [w for n, sc in enumerate(scenes + others) for w in _window_scenes(sc, np.random.default_rng(seed + 1000 + n), n_windows,
                                                                          scale, base, psf_sigma)]
    recoloured = [c for n, sc in enumerate(scenes + others) for c in _spectral_copies(
        sc, np.random.default_rng(seed + 2000 + n), n_spectral, scale, srf, psf, wavelengths, base, psf_sigma,
        cfg.get("snr_db"), seed + 3000 + 100 * n)]
    n_degraded = int(cfg.get("degradation_augment") or 0)
    if n_degraded and (mode != "supervised" or wavelengths is None or not isinstance(cfg.get("srf"), str)):
        raise ValueError("degradation_augment needs reference cubes with wavelengths and a sensor response (data.mode: supervised)")
    degraded = [c for n, sc in enumerate(scenes) for c in _degraded_copies(
        sc, np.random.default_rng(seed + 4000 + n), n_degraded, scale, cfg.get("srf"), wavelengths, fwhm, msi_names, base,
        psf_sigma, bool(cfg.get("degradation_noise", True)))]
    extra = others + windows + recoloured + degraded

    ref_pixels = np.concatenate([s.ref[:, s.valid] for s in scenes], axis=1)[:, :, None]
    msi_pixels = np.concatenate([s.msi[:, s.valid] for s in scenes], axis=1)[:, :, None]
    hsi_norm = BandNormalization.fit(ref_pixels)
    msi_norm = BandNormalization.fit(msi_pixels)
    desc = {
        "mode": mode,
        "files": [str(p) for p in paths] + ([str(cfg["msi"])] if cfg.get("msi") else []),
        "scale": scale,
        "srf": cfg.get("srf"),
        "snr_db": cfg.get("snr_db"),
        "val_region": None if val_region is None else [int(v) for v in val_region],
        "val_region_auto": auto,
        "exclude": exclude,
        "input_bands": input_bands,  # the sensor's band count; band_indices are the bands used
        "base": base,
        "train_pixels": int(sum(s.valid.sum() for s in scenes)),
        "extra_hsi": [extra_hsi_source(p)[0] for p in extra_paths],
        "base_windows": len(windows),
        "spectral_augment": len(recoloured),
        "degradation_augment": len(degraded),
        "degradation_noise": bool(cfg.get("degradation_noise", True)) if degraded else None,
        "degradation": degradation,
        "check_crop": check_box if mode == "self_supervised" else None,
    }
    return DataBundle(
        scenes=scenes + extra,
        scale=scale,
        hsi_norm=hsi_norm,
        msi_norm=msi_norm,
        srf=srf,
        psf=psf,
        psf_sigma=float(psf_sigma) if psf_sigma is not None else scale / 2.3548,
        wavelengths=wavelengths,
        fwhm=fwhm,
        msi_band_names=msi_names,
        band_indices=[int(i) for i in band_idx],
        val=val,
        description=desc,
        scene_text=scene_text,
    )
