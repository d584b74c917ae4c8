"""Reverse diffusion with ONNX Runtime: numpy and onnxruntime only (no torch on this path).

Every update is ``X_prev = c_x0 * x0 + c_base * base + c_xt * X_t + sigma * noise`` with the
coefficients of :func:`core.schedule.sampling_plan` (``X`` is the diffused variable of the model's
schedule: the image or its scaled residual over the base; the result is decoded back to the image
at the end); ``X_T`` and every ``noise`` come from a :class:`NoiseField`,
one noise field defined on the whole output grid and keyed by position, so a tile sees the same
noise as the whole image at the same pixels (see :mod:`export.tiling`).

A model with the split graph layout (:data:`export.metadata.GRAPHS`) has its conditioning features
computed once per batch of tiles and fed to every step; a fused one runs both streams at every step.
On a GPU provider the tensors stay on the device between steps (IO binding with ``OrtValue``s;
the update itself is a small ONNX graph run by the same provider), so each step copies
only the fresh noise up and one float down. On the CPU the update is plain numpy around ``session.run``.

Every network output is checked: a non-finite value (NaN/inf) stops the run with a
:class:`ModelOutputError` naming the model file, the step and the tile, so a damaged or
mismatched model never turns into a nodata raster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.progress import Cancelled, Progress
from core.schedule import SamplingStep, sampling_plan

from .metadata import OUTPUT_NAME, ModelFileError, ModelMetadata, feature_names, graph_names, read_metadata
from .providers import create_session

__all__ = [
    "Cancelled",
    "Denoiser",
    "NoiseField",
    "StepCounter",
    "MAX_ANCESTRAL_STEPS",
    "ModelOutputError",
    "make_plan",
    "reverse_diffusion",
    "update_model_bytes",
]

log = logging.getLogger("hsr_diff.export")

MAX_ANCESTRAL_STEPS = 100  # the paper's ancestral sampling budget; more only costs time
NOISE_CELL = 64  # the noise field is generated in NOISE_CELL x NOISE_CELL cells of the output grid

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


# ---------------------------------------------------------------------- plan


def make_plan(metadata: ModelMetadata, steps: int, sampler: str = "ddim", eta: float = 0.0) -> list[SamplingStep]:
    """The reverse-diffusion plan for a model; validates the sampler arguments with clear messages."""
    if sampler not in ("ancestral", "ddim"):
        raise ValueError(f"sampler must be 'ancestral' or 'ddim', got {sampler!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if sampler == "ancestral" and steps > MAX_ANCESTRAL_STEPS:
        raise ValueError(f"ancestral sampling uses at most {MAX_ANCESTRAL_STEPS} steps (as in the paper), got {steps}; "
                         "use sampler='ddim' for other budgets")
    if steps > metadata.schedule.steps:
        raise ValueError(f"steps ({steps}) exceeds the model's training schedule ({metadata.schedule.steps} steps)")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    return sampling_plan(metadata.schedule, int(steps), sampler, float(eta))


# ---------------------------------------------------------------------- noise


class NoiseField:
    """Standard-normal noise on the whole output grid, keyed by position.

    The value at ``(band, row, col)`` for ``(sample, step)`` is fixed by ``seed`` alone: the grid
    is cut into ``cell x cell`` cells and each cell's ``(bands, cell, cell)`` block comes from a
    counter-based generator (Philox) seeded by ``SeedSequence([seed, sample, step, cell_row,
    cell_col])``. Any window reads the same values, whatever the tiling. ``step`` 0 is ``Z_T``,
    ``step k + 1`` the noise added after plan step ``k``.
    """

    def __init__(self, seed: int, bands: int, cell: int = NOISE_CELL):
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed, self.bands, self.cell = int(seed), int(bands), int(cell)

    def cell_block(self, sample: int, step: int, cell_row: int, cell_col: int) -> np.ndarray:
        ss = np.random.SeedSequence([self.seed, int(sample), int(step), int(cell_row), int(cell_col)])
        rng = np.random.Generator(np.random.Philox(ss))
        return rng.standard_normal((self.bands, self.cell, self.cell), dtype=np.float32)

    def window(self, sample: int, step: int, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """``(bands, height, width)`` float32 noise for the grid window at ``(row0, col0)`` (>= 0)."""
        if row0 < 0 or col0 < 0:
            raise ValueError("noise windows start at non-negative grid coordinates")
        c = self.cell
        out = np.empty((self.bands, height, width), np.float32)
        for cr in range(row0 // c, (row0 + height - 1) // c + 1):
            r_lo, r_hi = max(row0, cr * c), min(row0 + height, (cr + 1) * c)
            for cc in range(col0 // c, (col0 + width - 1) // c + 1):
                c_lo, c_hi = max(col0, cc * c), min(col0 + width, (cc + 1) * c)
                blk = self.cell_block(sample, step, cr, cc)
                out[:, r_lo - row0:r_hi - row0, c_lo - col0:c_hi - col0] = blk[:, r_lo - cr * c:r_hi - cr * c,
                                                                               c_lo - cc * c:c_hi - cc * c]
        return out

    def batch(self, sample: int, step: int, origins: Sequence[tuple[int, int]], height: int, width: int) -> np.ndarray:
        """``(len(origins), bands, height, width)`` for windows at the given ``(row0, col0)``."""
        return np.stack([self.window(sample, step, r, c, height, width) for r, c in origins])


# ---------------------------------------------------------------------- progress / cancel


class StepCounter:
    """Counts network evaluations and reports them to a :class:`core.progress.Progress`.

    Every :meth:`advance` reports ``(done / total, message)`` and checks the cancel flag, so a
    cancel is seen between any two denoising steps (:class:`core.progress.Cancelled`).
    """

    def __init__(self, total: int, progress=None, cancel: CancelFn | None = None):
        if isinstance(progress, Progress):
            self.progress = progress if cancel is None else Progress(progress.callback, cancel, progress.start, progress.end)
        else:
            self.progress = Progress(progress, cancel)
        self.total = max(int(total), 1)
        self.done = 0

    def check(self) -> None:
        self.progress.check()

    def report(self, message: str) -> None:
        self.progress.report(min(self.done / self.total, 1.0), message)

    def advance(self, n: int, message: str) -> None:
        self.done += n
        self.report(message)


# ---------------------------------------------------------------------- the update graph (no onnx package needed)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field_no: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field_no << 3 | 2) + _varint(len(data)) + data


def _vi(field_no: int, n: int) -> bytes:
    return _varint(field_no << 3) + _varint(n)


def _value_info(name: str, dims: Sequence[int | str]) -> bytes:
    """ValueInfoProto of a float tensor; ``dims`` are sizes (int) or symbolic names (str)."""
    shape = b"".join(_ld(1, _vi(1, d) if isinstance(d, int) else _ld(2, d)) for d in dims)
    tensor_type = _vi(1, 1) + _ld(2, shape)  # TypeProto.Tensor: elem_type = FLOAT, shape
    return _ld(1, name) + _ld(2, _ld(1, tensor_type))


def _node(op: str, inputs: Sequence[str], output: str, name: str) -> bytes:
    return b"".join(_ld(1, i) for i in inputs) + _ld(2, output) + _ld(3, name) + _ld(4, op)


_UPDATE_INPUTS = ("x0", "z", "noise", "base", "c_x0", "c_xt", "sigma", "c_base")
_UPDATE_TENSORS = ("x0", "z", "noise", "base")
_TENSOR = ("n", "c", "h", "w")


def update_model_bytes() -> bytes:
    """A serialised ONNX model ``z_prev = c_x0 * x0 + c_xt * z + sigma * noise + c_base * base`` (opset 17, IR 8).

    Its second output ``x0_check`` ``(1, 1, 1, 1)`` is ``sum(x0 - x0)``: 0 when every value of
    ``x0`` is finite, NaN otherwise (the IO-binding path reads it back instead of ``x0``).
    Written with a few lines of protobuf encoding so that inference needs no ``onnx`` package;
    ``tests/test_sampler.py`` checks it against ``onnx.helper`` and ``onnx.checker``.
    """
    nodes = [
        _node("Mul", ["c_x0", "x0"], "a", "mul_x0"),
        _node("Mul", ["c_xt", "z"], "b", "mul_xt"),
        _node("Add", ["a", "b"], "ab", "add_ab"),
        _node("Mul", ["sigma", "noise"], "c", "mul_noise"),
        _node("Add", ["ab", "c"], "abc", "add_noise"),
        _node("Mul", ["c_base", "base"], "d", "mul_base"),
        _node("Add", ["abc", "d"], "z_prev", "add_base"),
        _node("Sub", ["x0", "x0"], "x0_zero", "sub_x0"),
        _node("ReduceSum", ["x0_zero"], "x0_check", "sum_x0"),
    ]
    graph = (b"".join(_ld(1, n) for n in nodes) + _ld(2, "hsr_diff_update")
             + b"".join(_ld(11, _value_info(i, _TENSOR if i in _UPDATE_TENSORS else [1])) for i in _UPDATE_INPUTS)
             + _ld(12, _value_info("z_prev", _TENSOR)) + _ld(12, _value_info("x0_check", [1, 1, 1, 1])))
    opset = _ld(1, "") + _vi(2, 17)
    return _vi(1, 8) + _ld(2, "hsr-diff") + _ld(7, graph) + _ld(8, opset)


def _update_numpy(step: SamplingStep, x0: np.ndarray, z: np.ndarray, noise: np.ndarray | None, base: np.ndarray) -> np.ndarray:
    out = np.float32(step.c_x0) * x0 + np.float32(step.c_xt) * z
    if noise is not None:
        out = out + np.float32(step.sigma) * noise
    if step.c_base:
        out = out + np.float32(step.c_base) * base
    return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------------- the denoiser


class ModelOutputError(ModelFileError):
    """The network returned non-finite values; the message names the model file, the step and the tile."""


def _describe_nonfinite(x: np.ndarray) -> str:
    """``"NaN"``, ``"inf"`` or ``"NaN and inf"`` and how many of the values of ``x`` are non-finite."""
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    kind = " and ".join(k for k, n in (("NaN", nan), ("inf", inf)) if n)
    return f"{kind or 'NaN'} in {nan + inf} of {x.size} values"


class Denoiser:
    """An exported HSR-Diff denoiser in an ONNX Runtime session.

    ``device``: ``auto`` / ``cpu`` / ``cuda`` / ``tensorrt`` (see :mod:`export.providers`);
    ``info`` says which provider runs. Refuses files that are not hsr-diff models or whose graph
    inputs do not match their metadata (:class:`~export.metadata.ModelFileError`).
    """

    def __init__(self, model_path: str | os.PathLike, device: str = "auto", allow_fallback: bool = False,
                 threads: int | None = None):
        self.path = os.fspath(model_path)
        self.metadata: ModelMetadata = read_metadata(self.path)
        try:
            self.session, self.info = create_session(self.path, device, allow_fallback, threads)
        except ValueError:  # ProviderError included: a clear message already
            raise
        except Exception as exc:
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load this model ({type(exc).__name__}: {exc})") from exc
        self._check_graph()
        self._update_sess = None
        self._placeholders: dict[str, dict[str, np.ndarray]] = {}

    @property
    def info_line(self) -> str:
        return self.info.describe()

    def _check_graph(self) -> None:
        m = self.metadata
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        want_in, want_out = graph_names(m.graph, m.features)
        if set(ins) != set(want_in) or not set(want_out) <= set(outs):
            raise ModelFileError(f"{self.path}: graph inputs {sorted(ins)} / outputs {outs} do not follow the {m.graph} denoiser "
                                 f"contract (inputs {want_in}, outputs {want_out})")
        for name, bands in (("noisy", m.hsi_bands), ("lr_up", m.hsi_bands), ("base", m.hsi_bands), ("msi", m.msi_bands)):
            if name not in ins:
                continue
            shape = ins[name].shape
            if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != bands):
                raise ModelFileError(f"{self.path}: graph input '{name}' has shape {shape} but the metadata says {bands} bands")
        for name, i in ins.items():
            if i.type != "tensor(float)":
                raise ModelFileError(f"{self.path}: graph input '{name}' is {i.type}; hsr-diff graphs take float32")

    @property
    def split(self) -> bool:
        """Whether the conditioning features are computed once (:meth:`features`) and fed to every :meth:`step`."""
        return self.metadata.graph == "split"

    def placeholders(self, part: str) -> dict[str, np.ndarray]:
        """Smallest valid inputs ``(1, channels, m, m)`` for the part of a split graph a run skips.

        ``part``: ``"step"`` (fed while computing the features) or ``"condition"`` (fed at every step).
        """
        if part not in self._placeholders:
            m, k = self.metadata, self.metadata.spatial_multiple
            zeros = lambda c: np.zeros((1, c, k, k), np.float32)  # noqa: E731
            if part == "step":
                feeds = {"noisy": zeros(m.hsi_bands), "noise_level": np.ones(1, np.float32), "base": zeros(m.hsi_bands),
                         **{name: zeros(m.width) for name in feature_names(m.features)[0]}}
            else:
                feeds = {"lr_up": zeros(m.hsi_bands), "msi": zeros(m.msi_bands)}
            self._placeholders[part] = feeds
        return self._placeholders[part]

    def features(self, lr_up: np.ndarray, msi: np.ndarray) -> list[np.ndarray] | None:
        """The conditioning stream's features ``[(n, width, H, W)] * features`` of a split graph; None for a fused one."""
        if not self.split:
            return None
        _, f_out = feature_names(self.metadata.features)
        feeds = {"lr_up": np.ascontiguousarray(lr_up, np.float32), "msi": np.ascontiguousarray(msi, np.float32),
                 **self.placeholders("step")}
        return self.session.run(f_out, feeds)

    def step(self, noisy: np.ndarray, noise_level: np.ndarray, lr_up: np.ndarray, msi: np.ndarray,
             features: list[np.ndarray] | None) -> np.ndarray:
        """One network evaluation ``x0`` ``(n, hsi_bands, H, W)``; ``features`` from :meth:`features` (split graphs)."""
        noisy, noise_level = np.ascontiguousarray(noisy, np.float32), np.ascontiguousarray(noise_level, np.float32)
        lr_up = np.ascontiguousarray(lr_up, np.float32)
        if not self.split:
            feeds = {"noisy": noisy, "noise_level": noise_level, "lr_up": lr_up, "msi": np.ascontiguousarray(msi, np.float32)}
        else:
            f_in, _ = feature_names(self.metadata.features)
            feeds = {"noisy": noisy, "noise_level": noise_level, "base": lr_up, **dict(zip(f_in, features, strict=True)),
                     **self.placeholders("condition")}
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def __call__(self, noisy: np.ndarray, noise_level: np.ndarray, lr_up: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """One evaluation of both streams (the fused contract, whatever the graph layout)."""
        return self.step(noisy, noise_level, lr_up, msi, self.features(lr_up, msi))

    def output_error(self, x0: np.ndarray, where: str) -> ModelOutputError:
        """The error for a network output ``x0`` ``(n, bands, H, W)`` with non-finite values, at ``where`` (step, tile)."""
        return ModelOutputError(f"model '{os.path.basename(self.path)}' produced non-finite values ({_describe_nonfinite(x0)}) "
                                f"at {where}: the file is damaged or does not match its metadata ({self.path})")

    def check_output(self, x0: np.ndarray, where: str) -> None:
        """Raise :class:`ModelOutputError` unless every value of the network output ``x0`` is finite."""
        if not np.isfinite(x0).all():
            raise self.output_error(x0, where)

    def update_session(self):
        """The update graph's session on the same provider (for the IO-binding path)."""
        if self._update_sess is None:
            dev = self.info.provider if self.info.provider in ("cpu", "cuda") else "cuda"
            self._update_sess, _ = create_session(update_model_bytes(), dev, allow_fallback=True, threads=self.info.threads)
        return self._update_sess


# ---------------------------------------------------------------------- reverse diffusion

NoiseFn = Callable[[int, int], np.ndarray]  # (sample, step) -> (n, bands, H, W)


@dataclass
class SampleResult:
    mean: np.ndarray  # (n, bands, H, W) normalised
    std: np.ndarray | None  # per-pixel sample standard deviation (ddof 1), normalised; None for 1 sample


def _one_sample_numpy(den: Denoiser, lr_up, msi, feats, plan, noise: NoiseFn, s: int, prog: StepCounter | None,
                      msg: str) -> np.ndarray:
    n = lr_up.shape[0]
    z = noise(s, 0)
    for k, st in enumerate(plan):
        x0 = den.step(z, np.full((n,), st.noise_level, np.float32), lr_up, msi, feats)
        den.check_output(x0, f"step {k + 1}/{len(plan)} ({msg})")
        eps = noise(s, k + 1) if st.sigma > 0 else None
        z = _update_numpy(st, x0, z, eps, lr_up)
        if prog is not None:
            prog.advance(n, f"step {k + 1}/{len(plan)}, {msg}")
    return z


def _one_sample_bound(den: Denoiser, lr_up, msi, feats, plan, noise: NoiseFn, s: int, prog: StepCounter | None,
                      msg: str) -> np.ndarray:
    import onnxruntime as ort

    dev = "cuda" if den.info.on_gpu else "cpu"
    OV = ort.OrtValue  # noqa: N806
    n = lr_up.shape[0]
    shape = tuple(lr_up.shape)
    # On the CPU an OrtValue made from numpy shares its memory: ``keep`` holds those arrays alive.
    keep = [np.ascontiguousarray(noise(s, 0), np.float32), np.zeros(shape, np.float32)]
    lr_v = OV.ortvalue_from_numpy(lr_up, dev, 0)
    z_v = OV.ortvalue_from_numpy(keep[0], dev, 0)
    z_next = OV.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
    x0_v = OV.ortvalue_from_shape_and_type(shape, np.float32, dev, 0)
    check_v = OV.ortvalue_from_shape_and_type((1, 1, 1, 1), np.float32, dev, 0)
    eps_v = OV.ortvalue_from_numpy(keep[1], dev, 0)
    upd = den.update_session()
    io, io_u = den.session.io_binding(), upd.io_binding()
    if den.split:
        io.bind_ortvalue_input("base", lr_v)
        for name, f in zip(feature_names(den.metadata.features)[0], feats, strict=True):
            io.bind_ortvalue_input(name, f)
        for name, v in den.placeholders("condition").items():
            keep.append(v)
            io.bind_ortvalue_input(name, OV.ortvalue_from_numpy(v, dev, 0))
    else:
        io.bind_ortvalue_input("lr_up", lr_v)
        io.bind_ortvalue_input("msi", OV.ortvalue_from_numpy(msi, dev, 0))
    io.bind_ortvalue_output(OUTPUT_NAME, x0_v)
    io_u.bind_ortvalue_input("x0", x0_v)
    io_u.bind_ortvalue_input("noise", eps_v)
    io_u.bind_ortvalue_input("base", lr_v)
    eps_is_zero = True
    for k, st in enumerate(plan):
        # Bound CPU arrays may be used in place, so they stay referenced until the runs are done.
        level = np.full((n,), st.noise_level, np.float32)
        coefs = {name: np.array([getattr(st, name)], np.float32) for name in ("c_x0", "c_xt", "sigma", "c_base")}
        io.bind_ortvalue_input("noisy", z_v)
        io.bind_cpu_input("noise_level", level)
        den.session.run_with_iobinding(io)
        if st.sigma > 0:
            eps_v.update_inplace(np.ascontiguousarray(noise(s, k + 1)))
            eps_is_zero = False
        elif not eps_is_zero:
            eps_v.update_inplace(np.zeros(shape, np.float32))
            eps_is_zero = True
        io_u.bind_ortvalue_input("z", z_v)
        for name, v in coefs.items():
            io_u.bind_cpu_input(name, v)
        io_u.bind_ortvalue_output("z_prev", z_next)
        io_u.bind_ortvalue_output("x0_check", check_v)
        upd.run_with_iobinding(io_u)
        if not np.isfinite(check_v.numpy()).all():
            raise den.output_error(x0_v.numpy(), f"step {k + 1}/{len(plan)} ({msg})")
        z_v, z_next = z_next, z_v
        if prog is not None:
            prog.advance(n, f"step {k + 1}/{len(plan)}, {msg}")
    out = z_v.numpy().copy()
    del keep
    return out


def _bound_features(den: Denoiser, lr_up: np.ndarray, msi: np.ndarray) -> list:
    """The split graph's features as ``OrtValue``s left on the provider's device (IO binding)."""
    import onnxruntime as ort

    dev = "cuda" if den.info.on_gpu else "cpu"
    io = den.session.io_binding()
    keep = [lr_up, msi]
    io.bind_ortvalue_input("lr_up", ort.OrtValue.ortvalue_from_numpy(lr_up, dev, 0))
    io.bind_ortvalue_input("msi", ort.OrtValue.ortvalue_from_numpy(msi, dev, 0))
    for name, v in den.placeholders("step").items():
        keep.append(v)
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(v, dev, 0))
    for name in feature_names(den.metadata.features)[1]:
        io.bind_output(name, dev)
    den.session.run_with_iobinding(io)
    del keep
    return list(io.get_outputs())  # in the order bound


def reverse_diffusion(
    denoiser: Denoiser,
    lr_up: np.ndarray,
    msi: np.ndarray,
    plan: Sequence[SamplingStep],
    noise: NoiseFn,
    samples: int = 1,
    io_binding: bool | None = None,
    progress: StepCounter | None = None,
    message: str = "denoising",
) -> SampleResult:
    """Run the reverse diffusion on a batch of normalised, padded inputs ``(n, bands, H, W)``.

    ``noise(sample, step)`` gives ``Z_T`` (step 0) and the noise after plan step ``k`` (step
    ``k + 1``). ``io_binding`` defaults to True on GPU providers and False on the CPU. With
    ``samples > 1`` the result holds the mean and the per-pixel standard deviation. A non-finite
    network output raises :class:`ModelOutputError` at that step (``message`` says where, e.g.
    the tile).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    lr_up = np.ascontiguousarray(lr_up, np.float32)
    msi = np.ascontiguousarray(msi, np.float32)
    if io_binding is None:
        io_binding = denoiser.info.on_gpu
    run = _one_sample_bound if io_binding else _one_sample_numpy
    feats = None
    if denoiser.split:
        feats = _bound_features(denoiser, lr_up, msi) if io_binding else denoiser.features(lr_up, msi)
    schedule = denoiser.metadata.schedule

    def one(s: int, msg: str) -> np.ndarray:
        return schedule.decode(run(denoiser, lr_up, msi, feats, plan, noise, s, progress, msg), lr_up)

    if samples == 1:
        return SampleResult(one(0, message).astype(np.float32, copy=False), None)
    mean = m2 = None
    for s in range(samples):
        z = one(s, f"{message}, sample {s + 1}/{samples}").astype(np.float64)
        if mean is None:
            mean, m2 = z, np.zeros_like(z)
        else:  # Welford
            d = z - mean
            mean += d / (s + 1)
            m2 += d * (z - mean)
    return SampleResult(mean.astype(np.float32), np.sqrt(m2 / (samples - 1)).astype(np.float32))
