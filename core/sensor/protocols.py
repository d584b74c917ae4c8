"""Degradation protocols: how other people make (LR-HSI, HR-MSI) pairs, written out literally (numpy only).

A :class:`Degradation` is one way of making a pair from a reference HR-HSI ``(bands, rows, cols)``:

* **Spatial.** The HR image (cropped to a multiple of ``scale``) is blurred with an explicit separable kernel,
  mirror boundary (``dcb|abcd|cba``, numpy's ``reflect``), and sampled every ``scale`` HR pixels from the
  decimation ``phase``: ``lr = blurred[:, phase::scale, phase::scale]``, with
  ``blurred[y, x] = sum_{u, v} hr[y + u - a, x + v - a] * kernel[u, v]`` and ``a = k // 2`` the kernel's anchor
  (its centre tap for an odd ``k``). Two kernel layouts:

  - ``parity="centred"``: this project's convention (``core.sensor.degrade``): ``k % 2 == scale % 2`` and, at the
    default phase ``scale // 2``, each LR pixel's footprint is centred on its ``scale x scale`` HR block. Same
    size rule and samples as :func:`core.sensor.psf.gaussian_psf`, so the ``exact`` protocol is today's pair.
  - ``parity="odd"``: the ``(2r + 1) x (2r + 1)`` kernel of many public protocols, centred on the sampled pixel,
    ``r = ceil(3 sigma + max|shift|)`` for a Gaussian (support at least +-3 sigma around the shifted centre),
    ``r = ceil((w - 1) / 2 + max|shift|)`` for a box of side ``w``. At phase ``p`` the footprint's centre sits
    ``p - (scale - 1) / 2`` HR pixels off our block centre: half a pixel at even scales for ``p = scale // 2``
    (``odd-phase``), minus half a pixel for ``p = (scale - 1) // 2`` (``odd-phase-minus``), none at odd scales.

  Gaussian kernels are the Gaussian sampled at pixel centres (MATLAB's ``fspecial``); box kernels are the
  pixel-integrated box (each tap is the overlap of its pixel with the box), so a centred box of side ``scale``
  is the plain block mean. ``shift = (dy, dx)`` moves the PSF centre by a sub-pixel amount (down / right).
* **Spectral.** The sensor's response curves are shifted on the wavelength axis and stretched about their
  centroid (``srf_shift_nm``, ``srf_width``), then resampled onto the HSI bands by
  :func:`core.sensor.srf.spectral_response`; ``MSI_b = gain_b * (R HSI)_b + offset_b * mean((R HSI)_b)``.
* **Noise.** White Gaussian noise at ``snr_db`` on both images (:func:`core.sensor.simulate.add_noise`).

:meth:`Degradation.true_psf` gives the same spatial degradation as a kernel of our convention (for
``core.sensor.degrade_spatial`` and the baselines' ``psf=``), exactly: the protocol's taps placed in a kernel of
the scale's parity, plus the footprint offset it amounts to. :data:`PROTOCOLS` names the benchmark's protocols;
:func:`random_degradation` draws the training distribution (:data:`TRAINING_RANGES`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .degrade import degrade_spectral
from .psf import PSF_SHAPES, box_taps, sigma_for_scale
from .simulate import add_noise
from .srf import SpectralResponse, load_srf_csv, spectral_response

__all__ = ["Degradation", "TruePSF", "PROTOCOLS", "TRAINING_RANGES", "random_degradation", "protocol"]

PARITIES = ("centred", "odd")


@dataclass(frozen=True)
class TruePSF:
    """A protocol's spatial degradation in this project's convention.

    ``kernel`` float64 ``(k, k)``, sum 1, ``k % 2 == scale % 2``: ``degrade_spatial(hr, scale, kernel)`` gives the
    protocol's LR-HSI (to float32 rounding). ``shift = (dy, dx)``: HR pixels by which each LR pixel's footprint
    centre sits off the centre of its HR block (the ``shift`` of :func:`core.sensor.psf.gaussian_psf`).
    ``sigma``: the Gaussian's standard deviation in HR pixels (None for a box); ``width``: the box side in HR
    pixels (None for a Gaussian).
    """

    kernel: np.ndarray
    shift: tuple[float, float]
    sigma: float | None
    width: float | None

    def describe(self) -> str:
        size = f"sigma {self.sigma:.3f}" if self.sigma is not None else f"box {self.width:.2f}"
        return f"dy {self.shift[0]:+.3f} dx {self.shift[1]:+.3f} HR px, {size} HR px"


def _floats(value, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64)))
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"Degradation {name} must be one or more finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class Degradation:
    """One way of making an (LR-HSI, HR-MSI) pair from a reference HR-HSI (module docstring for the model).

    ``psf``: ``"gaussian"`` or ``"box"``. ``width``: the PSF's width as a factor of the nominal one, a Gaussian of
    FWHM = ``scale`` HR pixels (``sigma = width * scale / 2.3548``) or a box of side ``width * scale`` HR pixels.
    ``parity``: ``"centred"`` (our convention) or ``"odd"`` (kernel layout). ``phase``: the decimation phase, the
    HR row/col of the first LR sample, in ``[0, scale)`` (None: ``scale // 2``). ``shift``: ``(dy, dx)`` sub-pixel
    offset of the PSF centre, HR pixels. ``srf_shift_nm``: band-centre shift of the MSI response curves, nm;
    ``srf_width``: factor on their width (about each curve's centroid). ``gain``: per-MSI-band gain;
    ``offset``: per-MSI-band offset as a fraction of the band's mean. The four per-band fields take one value
    (every band) or several, repeated cyclically over the MSI bands. ``snr_db``: per-band SNR of white Gaussian
    noise added to both images, dB (None: noise-free).
    """

    psf: str = "gaussian"
    width: float = 1.0
    parity: str = "centred"
    phase: int | None = None
    shift: tuple[float, float] = (0.0, 0.0)
    srf_shift_nm: tuple[float, ...] = (0.0,)
    srf_width: tuple[float, ...] = (1.0,)
    gain: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    snr_db: float | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.psf not in PSF_SHAPES:
            raise ValueError(f"Degradation psf must be one of {PSF_SHAPES}, got {self.psf!r}")
        if self.parity not in PARITIES:
            raise ValueError(f"Degradation parity must be one of {PARITIES}, got {self.parity!r}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"Degradation width must be a positive factor of the nominal PSF, got {self.width}")
        if self.phase is not None and (int(self.phase) != self.phase or self.phase < 0):
            raise ValueError(f"Degradation phase must be a non-negative integer (HR px), got {self.phase}")
        shift = _floats(self.shift, "shift")
        if len(shift) != 2:
            raise ValueError(f"Degradation shift must be (dy, dx) in HR pixels, got {self.shift!r}")
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "phase", None if self.phase is None else int(self.phase))
        object.__setattr__(self, "shift", shift)
        for name in ("srf_shift_nm", "srf_width", "gain", "offset"):
            object.__setattr__(self, name, _floats(getattr(self, name), name))
        for name in ("srf_width", "gain"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"Degradation {name} must be > 0, got {getattr(self, name)}")
        if self.snr_db is not None:
            if not math.isfinite(self.snr_db):
                raise ValueError(f"Degradation snr_db must be finite dB or None, got {self.snr_db}")
            object.__setattr__(self, "snr_db", float(self.snr_db))

    # ------------------------------------------------------------------ spatial

    def sigma(self, scale: int) -> float:
        """The Gaussian's standard deviation in HR pixels (``width`` x the FWHM = ``scale`` one)."""
        return self.width * sigma_for_scale(scale)

    def box_side(self, scale: int) -> float:
        """The box PSF's side in HR pixels (``width * scale``)."""
        return self.width * float(scale)

    def decimation_phase(self, scale: int) -> int:
        """The HR row/col of the first LR sample; ``ValueError`` when it is not inside ``[0, scale)``."""
        p = scale // 2 if self.phase is None else self.phase
        if p >= scale:
            raise ValueError(f"decimation phase {p} must be below the scale {scale}")
        return p

    def footprint_offset(self, scale: int) -> tuple[float, float]:
        """``(dy, dx)``: HR pixels by which each LR footprint's centre sits off its block centre (our convention's)."""
        p = self.decimation_phase(scale)
        base = p - scale // 2 if self.parity == "centred" else p - (scale - 1) / 2.0
        return base + self.shift[0], base + self.shift[1]

    def _taps(self, scale: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(weights_y, weights_x, anchor)``: the separable kernel's 1-D taps ``(k,)`` (each summing to 1) and
        the index of the tap on the sampled pixel."""
        reach = max(abs(v) for v in self.shift)
        gaussian = self.psf == "gaussian"
        extent = 6.0 * self.sigma(scale) if gaussian else self.box_side(scale)
        if self.parity == "centred":
            k = max(int(scale), int(math.ceil(extent + 2.0 * reach - 1e-9)))
            k += (k - scale) % 2
            centre = (k - 1) / 2.0
        else:
            half = extent / 2.0 if gaussian else (extent - 1.0) / 2.0
            r = max(0, int(math.ceil(half + reach - 1e-9)))
            k, centre = 2 * r + 1, float(r)
        taps = []
        for s in self.shift:
            x = np.arange(k, dtype=np.float64) - centre - s  # distance of each tap from the PSF centre, HR px
            if gaussian:
                w = np.exp(-0.5 * (x / self.sigma(scale)) ** 2)
                taps.append(w / w.sum())
            else:
                taps.append(box_taps(x, self.box_side(scale)))
        return taps[0], taps[1], k // 2

    def spatial(self, hr: np.ndarray, scale: int) -> np.ndarray:
        """Blur and decimate: finite ``(bands, rows, cols)`` -> float32 ``(bands, rows // scale, cols // scale)``."""
        cube = np.asarray(hr, dtype=np.float64)
        if cube.ndim != 3:
            raise ValueError(f"expected (bands, rows, cols), got shape {cube.shape}")
        n_r, n_c = cube.shape[1] // scale, cube.shape[2] // scale
        if n_r == 0 or n_c == 0:
            raise ValueError(f"image {cube.shape[1:]} is smaller than the scale {scale}")
        if not np.isfinite(cube).all():
            raise ValueError("the reference HR-HSI has non-finite values: drop those bands or pixels first")
        wy, wx, anchor = self._taps(scale)
        p = self.decimation_phase(scale)
        my = _sampling_matrix(n_r * scale, n_r, scale, p, wy, anchor)
        mx = _sampling_matrix(n_c * scale, n_c, scale, p, wx, anchor)
        cube = cube[:, :n_r * scale, :n_c * scale]
        return np.matmul(np.matmul(my, cube), mx.T).astype(np.float32)

    def true_psf(self, scale: int) -> TruePSF:
        """The spatial degradation as a kernel of our convention (see :class:`TruePSF`), exact for every protocol."""
        wy, wx, anchor = self._taps(scale)
        p = self.decimation_phase(scale)
        k = wy.size
        first = p - anchor  # offset of tap 0 from the block's first HR pixel
        pad = max(0, -first, first + k - 1 - (scale - 1))
        size = 2 * pad + scale
        ky, kx = np.zeros(size), np.zeros(size)
        ky[pad + first:pad + first + k] = wy
        kx[pad + first:pad + first + k] = wx
        gaussian = self.psf == "gaussian"
        return TruePSF(np.outer(ky, kx), self.footprint_offset(scale), self.sigma(scale) if gaussian else None,
                       None if gaussian else self.box_side(scale))

    # ------------------------------------------------------------------ spectral and radiometric

    @property
    def perturbs_srf(self) -> bool:
        return any(v != 0 for v in self.srf_shift_nm) or any(v != 1 for v in self.srf_width)

    def response(self, sensor: str | Path, wavelengths_nm, fwhm_nm=None, bands=None, valid_bands=None,
                 min_coverage: float = 0.8) -> SpectralResponse:
        """The sensor's response with this protocol's band-centre shift and width factor, on the HSI bands.

        Arguments as :func:`core.sensor.srf.spectral_response` (which has no shift/stretch of its own): each
        selected curve ``S`` becomes ``S'(l) = S(c + (l - c - srf_shift_nm) / srf_width)`` about its centroid
        ``c``, on a grid as fine as the curve file's; the result keeps the sensor's name and band names.
        """
        nominal = spectral_response(sensor, wavelengths_nm, fwhm_nm, bands=bands, valid_bands=valid_bands,
                                    min_coverage=min_coverage)
        if not self.perturbs_srf:
            return nominal
        wl, names, curves = load_srf_csv(sensor)
        index = {n: i for i, n in enumerate(names)}
        sel = curves[[index[n] for n in nominal.band_names]]
        m = len(nominal.band_names)
        shift = np.resize(np.asarray(self.srf_shift_nm), m)
        stretch = np.resize(np.asarray(self.srf_width), m)
        centroid = (sel * wl).sum(axis=1) / sel.sum(axis=1)
        lo = float(np.min(centroid + shift + stretch * (wl[0] - centroid)))
        hi = float(np.max(centroid + shift + stretch * (wl[-1] - centroid)))
        step = float(np.min(np.diff(wl))) * min(1.0, float(stretch.min()))
        grid = np.arange(lo, hi + step / 2, step)
        moved = np.stack([np.interp(centroid[b] + (grid - centroid[b] - shift[b]) / stretch[b], wl, sel[b],
                                    left=0.0, right=0.0) for b in range(m)])
        out = spectral_response(nominal.sensor, wavelengths_nm, fwhm_nm, valid_bands=valid_bands, min_coverage=min_coverage,
                                curves=(grid, nominal.band_names, moved))
        return replace(out, sensor=nominal.sensor)

    def apply(self, ref: np.ndarray, scale: int, srf, wavelengths_nm=None, fwhm_nm=None, bands=None, valid_bands=None,
              rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Make the pair ``(lr_hsi, hr_msi)`` from a finite reference ``ref`` ``(bands, rows, cols)``.

        ``srf``: a sensor name or response CSV (then ``wavelengths_nm`` etc. as :meth:`response`, which applies
        the SRF perturbation), or the pair's true response as a ``SpectralResponse`` or ``(msi_bands, bands)``
        matrix, used as given (e.g. what :meth:`response` returned). ``rng``: the noise draw (a Generator or a
        seed; None = seed 0). Returns float32 ``(bands, rows // scale, cols // scale)`` and
        ``(msi_bands, rows // scale * scale, cols // scale * scale)``.
        """
        if isinstance(srf, (str, Path)):
            if wavelengths_nm is None:
                raise ValueError(f"the {srf} response needs the HSI band wavelengths (nm)")
            srf = self.response(srf, wavelengths_nm, fwhm_nm, bands=bands, valid_bands=valid_bands)
        hr = np.asarray(ref, dtype=np.float32)
        hr = hr[:, :hr.shape[1] // scale * scale, :hr.shape[2] // scale * scale]
        lr = self.spatial(hr, scale)
        msi = degrade_spectral(hr, srf)
        m = msi.shape[0]
        gain = np.resize(np.asarray(self.gain), m)
        offset = np.resize(np.asarray(self.offset), m) * msi.reshape(m, -1).mean(axis=1, dtype=np.float64)
        msi = (msi * gain[:, None, None] + offset[:, None, None]).astype(np.float32)
        if self.snr_db is not None:
            gen = np.random.default_rng(0 if rng is None else rng)
            lr = add_noise(lr, self.snr_db, gen)
            msi = add_noise(msi, self.snr_db, gen)
        return lr, msi

    def describe(self, scale: int | None = None) -> str:
        """One line: PSF, layout, phase, shift, SRF, radiometry, noise (``scale`` fills in the default phase)."""
        phase = self.phase if self.phase is not None or scale is None else scale // 2
        parts = [f"{self.psf} x{self.width:.2f}", f"{self.parity} kernel, phase {'scale // 2' if phase is None else phase}"]
        if any(self.shift):
            parts.append(f"shift dy {self.shift[0]:+.2f} dx {self.shift[1]:+.2f} HR px")
        if self.perturbs_srf:
            parts.append("SRF centre " + "/".join(f"{v:+.1f}" for v in self.srf_shift_nm) + " nm, width x"
                         + "/".join(f"{v:.2f}" for v in self.srf_width))
        if any(v != 1 for v in self.gain) or any(self.offset):
            parts.append("MSI gain " + "/".join(f"{v:.3f}" for v in self.gain) + ", offset "
                         + "/".join(f"{v:+.3f}" for v in self.offset) + " x mean")
        parts.append("noise-free" if self.snr_db is None else f"SNR {self.snr_db:.1f} dB")
        return "; ".join(parts)


def _sampling_matrix(n_hr: int, n_lr: int, scale: int, phase: int, weights: np.ndarray, anchor: int) -> np.ndarray:
    """``(n_lr, n_hr)``: row ``i`` holds the taps of the blur sampled at HR ``i * scale + phase``, mirror-folded."""
    k = weights.size
    idx = np.arange(n_lr)[:, None] * scale + phase - anchor + np.arange(k)[None, :]
    if n_hr == 1:
        idx = np.zeros_like(idx)
    else:
        period = 2 * n_hr - 2
        idx = np.mod(idx, period)
        idx = np.where(idx >= n_hr, period - idx, idx)
    out = np.zeros((n_lr, n_hr))
    np.add.at(out, (np.repeat(np.arange(n_lr), k), idx.ravel()), np.tile(weights, n_lr))
    return out


_GAIN_OFFSET = ((1.04, 0.97, 1.02, 0.95, 1.06), (0.01, -0.02, 0.0, 0.015, -0.01))

PROTOCOLS: dict[str, Callable[[int], Degradation]] = {
    "exact": lambda s: Degradation(name="exact"),
    "odd-phase": lambda s: Degradation(parity="odd", phase=s // 2, name="odd-phase"),
    "odd-phase-minus": lambda s: Degradation(parity="odd", phase=(s - 1) // 2, name="odd-phase-minus"),
    "psf-wide": lambda s: Degradation(width=1.3, name="psf-wide"),
    "psf-narrow": lambda s: Degradation(width=0.75, name="psf-narrow"),
    "shift-0.5": lambda s: Degradation(shift=(0.5, 0.5), name="shift-0.5"),
    "box-psf": lambda s: Degradation(psf="box", name="box-psf"),
    "noisy-35db": lambda s: Degradation(snr_db=35.0, name="noisy-35db"),
    "srf-shift": lambda s: Degradation(srf_shift_nm=5.0, name="srf-shift"),
    "gain-offset": lambda s: Degradation(gain=_GAIN_OFFSET[0], offset=_GAIN_OFFSET[1], name="gain-offset"),
}
"""The benchmark's protocols by name, each a function of the scale. ``exact``: today's (centred Gaussian, FWHM =
scale); ``odd-phase`` / ``odd-phase-minus``: odd Gaussian kernel decimated at ``scale // 2`` / ``(scale - 1) // 2``
(+-0.5 HR px at even scales); ``psf-wide`` / ``psf-narrow``: sigma x1.3 / x0.75; ``shift-0.5``: 0.5 HR px down and
right; ``box-psf``: the block mean; ``noisy-35db``: 35 dB SNR on both images; ``srf-shift``: MSI band centres
+5 nm; ``gain-offset``: per-MSI-band gains 0.95-1.06 and offsets -2..+1.5 % of the band mean."""


def protocol(name: str, scale: int) -> Degradation:
    """The named protocol at ``scale``; ``ValueError`` listing the names for an unknown one."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown degradation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](scale)


TRAINING_RANGES: dict[str, tuple[float, float]] = {
    "width": (0.7, 1.4),  # x the nominal PSF (Gaussian FWHM = scale, box side = scale)
    "shift": (-0.75, 0.75),  # HR px, each axis
    "srf_shift_nm": (-5.0, 5.0),  # nm, each MSI band
    "srf_width": (0.8, 1.2),  # factor, each MSI band
    "gain": (0.95, 1.05),  # each MSI band
    "offset": (-0.02, 0.02),  # x the band's mean, each MSI band
    "snr_db": (30.0, 50.0),  # dB, both images
}
"""Uniform ranges of :func:`random_degradation` (issue 14 item 3); the PSF is a box with probability
:data:`BOX_PROBABILITY`, the kernel layout centred or odd with equal odds, at a uniform decimation phase."""
BOX_PROBABILITY = 0.25


def random_degradation(rng: np.random.Generator, scale: int, msi_bands: int = 16) -> Degradation:
    """A new degradation for a training pair, drawn from :data:`TRAINING_RANGES` (always a valid one).

    Centred (even at even scales) and odd kernels, each at every decimation phase ``0 .. scale - 1``;
    ``msi_bands`` per-band SRF shifts, widths, gains and offsets (repeated cyclically beyond that).
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")

    def u(key: str, n: int | None = None):
        lo, hi = TRAINING_RANGES[key]
        return float(rng.uniform(lo, hi)) if n is None else tuple(float(v) for v in rng.uniform(lo, hi, n))

    return Degradation(
        psf="box" if rng.random() < BOX_PROBABILITY else "gaussian",
        width=u("width"),
        parity=PARITIES[int(rng.integers(2))],
        phase=int(rng.integers(scale)),
        shift=u("shift", 2),
        srf_shift_nm=u("srf_shift_nm", msi_bands),
        srf_width=u("srf_width", msi_bands),
        gain=u("gain", msi_bands),
        offset=u("offset", msi_bands),
        snr_db=u("snr_db"),
        name="random",
    )
