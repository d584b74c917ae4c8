"""Super-resolve many scenes on a Dask ``distributed`` cluster.

``python -m export.batch --pairs PAIRS.tsv [--model M.onnx] [--scheduler tcp://HOST:8786 | --workers 2]
[--steps 25] [--sampler ddim|ancestral] [--eta 0] [--seed 0] [--samples 1] [--tile 256] [--overlap 32]
[--batch 1] [--device auto|cpu|cuda|tensorrt] [--degradation estimate|model] [--uncertainty]
[--units auto|scene|tiles]``

The pairs file has one ``LR<TAB>MSI<TAB>OUT`` line per scene (LR-HSI, HR-MSI, output GeoTIFF);
blank lines and lines starting with ``#`` are ignored, relative paths are relative to the pairs
file's folder, and a malformed line is refused with the file name and line number. Every path
must be readable and writable under the same name on the workers (a shared file system).

Without ``--model`` each scene gets the bundled model that fits it
(:func:`export.bundled.choose_model`), chosen on the client before anything is submitted (a scene
whose inputs or output folder are missing, or that no model fits, is failed there, not retried); a
``--model`` is checked against each pair by :func:`export.superresolve.superresolve`, as in a
single run (both through the one input check, :mod:`export.inputs`).
``--scheduler`` connects to an existing cluster (dask-jobqueue on SLURM/PBS, Kubernetes, Coiled,
``dask scheduler`` + ``dask worker``); without it a ``LocalCluster`` of ``--workers`` processes
with one thread each runs here.

Work units (``--units``): *scenes*, or the *tiles* of a scene. A scene task calls
:func:`export.superresolve.superresolve` for one pair with ``threads=1``; a worker runs one task
at a time and opens each model once (an ONNX Runtime session cached per worker process, keyed by
the model file, its size and modification time, the device and the fallback flag). A scene split
into tiles (``auto``, the default, does so when there are fewer scenes to run than workers, e.g.
one huge scene) is opened on the client, which computes once what is global to the scene (the scan
for empty bands, the degradation estimate, the conditioning base's fit: a small, picklable
:class:`~export.superresolve.SceneSetup`); each task then denoises one batch group of the layout of
:class:`export.tiling.TileRun` (tiles with their overlaps) and writes the tiles' weighted shares
of the owner regions to ``OUT.tif.parts-ID/gNNNNN.npz``; when all are there, the client sums the
owner regions in row-major tile order, exactly as the single-process tiler does, into the one
atomic output, and removes the parts. The noise of every tile is seeded by its global pixel
position, so each output is bit-identical to a single-process ``superresolve(..., threads=1)`` run
(the CLI's ``--threads 1``) whatever the work units, the number of workers or the order in which
tasks finish.

Failures: a task that raises is retried once (``retries=1``); a worker that dies while it runs a
task (killed, out of memory) makes the scheduler run the task again on another worker,
at most ``distributed.scheduler.allowed-failures`` times (set to 1 for the ``LocalCluster`` made
here; an existing cluster keeps its own setting). Every failed scene is reported at the end with
its error and the exit status is 1; nothing is skipped silently. A split scene fails as a whole
when one of its tile tasks fails twice; its other tasks are cancelled and its parts removed. A worker that died while writing
leaves its output's lock file (``OUT.tif.lock``); a retry on the same host takes the stale lock
over, one on another host sees it as live and fails naming it (delete it, then resume).

Resuming: a scene whose output already exists (and its ``_std`` raster with ``--uncertainty``) is
skipped. That is safe because a finished output is only ever renamed into place: it is written to
a temporary file that is renamed when the whole scene succeeded, so the final file exists only
when it is complete. An output left by a run with another model or other options is not detected;
delete it to compute it again.

Progress over the whole batch (scenes finished / total, elapsed time and an estimate of the time
left; tile units finished per split scene) goes to stderr. Needs ``dask`` and ``distributed`` besides the inference dependencies; they
are optional for the rest of hsr-diff (the QGIS plugin and :mod:`export.superresolve` never import
them), and without them this command prints the install command.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults as dflt

__all__ = ["Pair", "PairsFileError", "SceneResult", "BatchResult", "MissingDependency", "read_pairs", "run_batch", "main",
           "INSTALL_COMMAND", "SAMPLER_OPTIONS", "UNITS"]

DASK_VERSION = "2026.8.0"
INSTALL_COMMAND = f"{sys.executable} -m pip install 'dask=={DASK_VERSION}' 'distributed=={DASK_VERSION}'"
"""The command that installs the optional dependencies into this interpreter (``python3 build.py setup`` does too)."""

UNITS = ("auto", "scene", "tiles")
"""What a task computes: a scene, or a group of tiles of a scene (see :func:`run_batch`)."""

SAMPLER_OPTIONS = frozenset({"steps", "sampler", "eta", "seed", "samples", "tile", "overlap", "batch", "device",
                             "allow_fallback", "allow_scale_mismatch", "degradation", "output_type", "check",
                             "blend"})
"""Keyword arguments of :func:`export.superresolve.superresolve` that :func:`run_batch` passes to every scene."""


class PairsFileError(ValueError):
    """A malformed pairs file; the message starts with ``FILE:LINE:``."""


class MissingDependency(ImportError):
    """``dask`` or ``distributed`` is not installed; the message holds the install command."""


@dataclass(frozen=True)
class Pair:
    """One scene: LR-HSI, HR-MSI and output paths; ``line`` is its line in the pairs file (1-based) or None."""

    lr: str
    msi: str
    out: str
    line: int | None = None

    @property
    def uncertainty(self) -> str:
        """The per-pixel standard deviation raster written with ``uncertainty=True``: ``OUT`` with ``_std`` before the suffix."""
        p = Path(self.out)
        return str(p.with_name(f"{p.stem}_std{p.suffix or '.tif'}"))

    def describe(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.lr} + {self.msi} -> {self.out}"


@dataclass
class SceneResult:
    """What became of one pair.

    ``status``: ``done`` (computed now), ``skipped`` (the output existed) or ``failed`` (``error``
    says why). ``attempts``: times the scene was scheduled: 1, plus one after its task raised, plus
    one each time the worker holding it died (also when the scene was still waiting there); 0 =
    never submitted, None = unknown (the scheduler could not be asked). ``seconds``: wall time of
    the successful run on its worker. ``worker``: ``host:pid`` of that worker process.
    ``reused_model``: the worker had the model open already (from an earlier scene).
    """

    pair: Pair
    status: str
    model: str | None = None
    attempts: int | None = 0
    seconds: float = 0.0
    worker: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    reused_model: bool = False

    @property
    def retried(self) -> bool:
        return bool(self.attempts and self.attempts > 1)


@dataclass
class BatchResult:
    """All scenes of a batch, in the order of the pairs; ``seconds`` is the batch's wall time, ``workers`` the cluster's size."""

    scenes: list[SceneResult]
    seconds: float
    workers: int
    scheduler: str

    def _with(self, status: str) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == status]

    @property
    def done(self) -> list[SceneResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[SceneResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SceneResult]:
        return self._with("failed")

    @property
    def retried(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.retried]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> list[str]:
        """Lines for a person: the counts, throughput, then every retried and every failed scene."""
        n = len(self.done)
        rate = f", {n / self.seconds * 60:.1f} scenes/min" if n and self.seconds > 0 else ""
        lines = [f"{len(self.scenes)} scene(s): {n} done, {len(self.skipped)} skipped (output already complete), "
                 f"{len(self.failed)} failed, {len(self.retried)} retried; {_duration(self.seconds)} on {self.workers} "
                 f"worker(s){rate}"]
        lines += [f"retried: {s.pair.describe()} ({s.attempts} attempts, {s.status})" for s in self.retried]
        lines += [f"FAILED: {s.pair.describe()}: {s.error}" for s in self.failed]
        return lines


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """The pairs of a ``LR<TAB>MSI<TAB>OUT`` file; raises :class:`PairsFileError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PairsFileError(f"{path}: cannot read the pairs file ({exc})") from None
    base = path.parent
    pairs: list[Pair] = []
    outs: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(" \r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise PairsFileError(f"{path}:{n}: expected LR<TAB>MSI<TAB>OUT (three tab-separated paths), got "
                                 f"{len(fields)} field(s): {raw!r}")
        lr, msi, out = (str(base / f.strip()) for f in fields)
        key = os.path.normpath(os.path.abspath(out))
        if key in outs:
            raise PairsFileError(f"{path}:{n}: output {out} is already the output of line {outs[key]}")
        outs[key] = n
        pairs.append(Pair(lr, msi, out, n))
    if not pairs:
        raise PairsFileError(f"{path}: no pairs (expected LR<TAB>MSI<TAB>OUT lines)")
    return pairs


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError as exc:
        raise MissingDependency(f"export.batch needs dask and distributed ({exc}); install them with:\n  {INSTALL_COMMAND}\n"
                                "(or run 'python3 build.py setup', which installs requirements.txt)") from None
    return dask, distributed


# ---------------------------------------------------------------------- on the workers

_DENOISERS: dict[tuple, object] = {}
"""The models a worker process has opened: ``(real path, size, mtime_ns, device, allow_fallback) -> Denoiser``."""


def _cached_denoiser(model: str, device: str, allow_fallback: bool):
    from .sampler import Denoiser

    st = os.stat(model)
    key = (os.path.realpath(model), st.st_size, st.st_mtime_ns, device, bool(allow_fallback))
    den = _DENOISERS.get(key)
    if den is None:
        den = _DENOISERS[key] = Denoiser(model, device=device, allow_fallback=allow_fallback, threads=1)
    return den


def _run_scene(lr: str, msi: str, model: str, out: str, uncertainty: str | None, options: dict) -> dict:
    """One scene on a worker (one thread); returns seconds, worker, provider, notes and whether the model was already open."""
    from .superresolve import superresolve

    t0 = time.perf_counter()
    opened = len(_DENOISERS)
    den = _cached_denoiser(model, options.get("device", dflt.DEFAULT_DEVICE), options.get("allow_fallback", False))
    reused = len(_DENOISERS) == opened
    res = superresolve(lr, msi, model, out, uncertainty_path=uncertainty, threads=1, denoiser=den, **options)
    return {"seconds": time.perf_counter() - t0, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "provider": res.provider, "notes": list(res.notes), "reused_model": reused}


_SCENES: dict[str, tuple] = {}
"""The split scene a worker process has open: ``parts folder -> (ExitStack, Scene, TileRun)`` (one at a time)."""


def _split_scene(lr: str, msi: str, model: str, parts: str, setup, options: dict):
    """The worker's opened scene and tile layout for a split scene (opened on its first tile, kept for the next)."""
    from .superresolve import open_scene
    from .tiling import TileRun

    got = _SCENES.get(parts)
    if got is None:
        for old in list(_SCENES):
            _SCENES.pop(old)[0].close()
        stack = ExitStack()
        try:
            den = _cached_denoiser(model, options.get("device", dflt.DEFAULT_DEVICE), options.get("allow_fallback", False))
            scene = open_scene(stack, lr, msi, model, den.metadata, degradation=options.get("degradation", dflt.DEFAULT_DEGRADATION),
                               allow_scale_mismatch=options.get("allow_scale_mismatch", False), setup=setup)
            run = TileRun(den.metadata, scene.source.rows, scene.source.cols, **_run_options(options))
        except BaseException:
            stack.close()
            raise
        got = _SCENES[parts] = (stack, scene, run)
    return got


def _run_options(options: dict) -> dict:
    """The :class:`~export.tiling.TileRun` arguments among a batch's sampler options."""
    keys = ("steps", "sampler", "eta", "seed", "samples", "tile", "overlap", "batch")
    return {k: options[k] for k in keys if k in options} | {"with_std": bool(options.get("with_std"))}


def _run_group(lr: str, msi: str, model: str, parts: str, setup, options: dict, group: int) -> dict:
    """Denoise one group of tiles of a split scene on a worker; its pieces go to ``parts/gNNNNN.npz`` (atomically)."""
    import numpy as np

    t0 = time.perf_counter()
    den = _cached_denoiser(model, options.get("device", dflt.DEFAULT_DEVICE), options.get("allow_fallback", False))
    _, scene, run = _split_scene(lr, msi, model, parts, setup, options)
    arrays = {}
    for t, mean, std in run.denoise(den, scene.source, run.groups[group]):
        for (oi, oj), (r0, c0, pm, ps) in run.pieces(t, mean, std).items():
            key = f"t{t.i}_{t.j}_o{oi}_{oj}"
            arrays[key + "_m"], arrays[key + "_at"] = pm, np.array([r0, c0])
            if ps is not None:
                arrays[key + "_s"] = ps
    final = Path(parts) / f"g{group:05d}.npz"
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, final)
    return {"seconds": time.perf_counter() - t0, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _attempts_function():
    """A function for ``Client.run_on_scheduler``: ``{key: (suspicious, retries left)}`` of live tasks.

    Built in a closure so that it is pickled by value and the scheduler needs no hsr-diff import.
    """

    def attempts(keys, dask_scheduler=None):
        out = {}
        for k in keys:
            ts = dask_scheduler.tasks.get(k)
            out[k] = None if ts is None else (int(ts.suspicious), int(ts.retries))
        return out

    return attempts


# ---------------------------------------------------------------------- on the client


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _merge_scene(scene, run, parts: Path, pair: Pair, uncertainty: bool, options: dict, srf=None) -> None:
    """Assemble a split scene's owner regions from the workers' pieces into its output(s), atomically (averaged with
    CNMF's result on a noisy pair, as :func:`export.superresolve.superresolve` does; ``srf``: the check's response)."""
    import numpy as np

    from core.raster_io import commit_all

    from .check import blended_sink
    from .superresolve import check_outputs, open_writers

    out, unc = check_outputs(pair.out, pair.uncertainty if uncertainty else None, run.samples, pair.lr, pair.msi)
    group_of = {(t.i, t.j): g for g, grp in enumerate(run.groups) for t in grp}
    with ExitStack() as stack:
        writers, sink = open_writers(stack, scene, out, unc, run.samples, run.tile, run.overlap)
        sink = blended_sink(scene, sink, srf)
        files: dict[int, object] = {}
        stack.callback(lambda: [f.close() for f in files.values()])
        last_row = [max(t.i for t in grp) for grp in run.groups]
        for i in range(run.nr):
            for j in range(run.nc):
                pieces = []
                for t in run.contributors(i, j):
                    g = group_of[t.i, t.j]
                    if g not in files:
                        files[g] = np.load(parts / f"g{g:05d}.npz")
                    f, key = files[g], f"t{t.i}_{t.j}_o{i}_{j}"
                    r0, c0 = (int(v) for v in f[key + "_at"])
                    pieces.append((r0, c0, f[key + "_m"], f[key + "_s"] if key + "_s" in f else None))
                sink.write(run.owner_window(i, j), *run.assemble(i, j, pieces))
            for g in [g for g in files if last_row[g] < i]:  # owner rows below i need tiles of rows i and below only
                files.pop(g).close()
        commit_all(writers)


def _open_split(stack: ExitStack, pair: Pair, model: str, uncertainty: bool, sampler_kwargs: dict, batch_id: str) -> dict:
    """Open a scene to split into tile work units on the client: its setup (scan, estimate, base fit) and layout."""
    import shutil

    from core.raster_io import commit_all

    from .check import drop_blend, write_classical
    from .metadata import read_metadata
    from .superresolve import check_outputs, decide, open_scene, open_writers, sampler_note
    from .tiling import TileRun

    options = dict(sampler_kwargs) | {"with_std": uncertainty}
    samples = options.get("samples", dflt.DEFAULT_SAMPLES)
    check_outputs(pair.out, pair.uncertainty if uncertainty else None, samples, pair.lr, pair.msi, model)
    md = read_metadata(model)
    own = ExitStack()
    try:
        scene = open_scene(own, pair.lr, pair.msi, model, md, allow_scale_mismatch=options.get("allow_scale_mismatch", False),
                           degradation=options.get("degradation", dflt.DEFAULT_DEGRADATION),
                           output_type=options.get("output_type", dflt.DEFAULT_OUTPUT_TYPE), sampler_note=sampler_note(**options),
                           blend=options.get("blend", True))
        den = _cached_denoiser(model, options.get("device", dflt.DEFAULT_DEVICE), options.get("allow_fallback", False))
        verdict, method = decide(scene, den, options.get("check", dflt.DEFAULT_CHECK),
                           **{k: options[k] for k in ("steps", "sampler", "eta", "seed") if k in options})
        if method != "model":  # a classical method won the check: written here, no tile tasks
            drop_blend(scene, method)
            with ExitStack() as out_stack:
                writers, sink = open_writers(out_stack, scene, pair.out, pair.uncertainty if uncertainty else None, samples,
                                             options.get("tile", dflt.DEFAULT_TILE), options.get("overlap", dflt.DEFAULT_OVERLAP))
                write_classical(scene, method, sink, verdict.srf, uncertainty)
                commit_all(writers)
            own.close()
            return {"scene": scene, "method": method}
        run = TileRun(md, scene.source.rows, scene.source.cols, **_run_options(options))
        parts = Path(f"{pair.out}.parts-{batch_id}")
        parts.mkdir()
    except BaseException:
        own.close()
        raise

    def close() -> None:
        own.close()
        shutil.rmtree(parts, ignore_errors=True)

    stack.callback(close)  # a failed, interrupted or finished batch leaves no parts behind
    return {"scene": scene, "run": run, "parts": parts, "options": options, "left": len(run.groups), "attempts": 1,
            "srf": None if verdict is None else verdict.srf,
            "workers": set(), "start": time.perf_counter(), "close": close}


def run_batch(pairs: Iterable[Pair | tuple] | str | os.PathLike, model: str | os.PathLike | None = None, scheduler=None,
              workers: int = 2, models_dir: str | os.PathLike | None = None, uncertainty: bool = False,
              log: Callable[[str], None] | None = _stderr, units: str = "auto", **sampler_kwargs) -> BatchResult:
    """Super-resolve every pair on a Dask cluster; see the module docstring for the guarantees.

    ``pairs``: :class:`Pair` objects, ``(lr, msi, out)`` tuples, or the path of a pairs file.
    ``model``: one ``.onnx`` for every scene (checked against each pair), or None for the bundled
    model that fits each pair (from ``models_dir``, default ``models/``). ``scheduler``: an
    address (``tcp://host:8786``), a ``distributed.Client``, or None for a ``LocalCluster`` of
    ``workers`` processes with one thread each. ``uncertainty``: also write each scene's
    per-pixel standard deviation to :attr:`Pair.uncertainty` (needs ``samples >= 2``).
    ``sampler_kwargs``: any of :data:`SAMPLER_OPTIONS` (``steps``, ``sampler``, ``eta``, ...).
    ``log(message)`` gets the progress lines (default: stderr; None: silent). ``units``: ``scene``
    (a task per scene), ``tiles`` (every scene split into tile tasks, merged on the client) or
    ``auto`` (tiles when there are fewer scenes to run than workers, e.g. one huge scene).

    Raises :class:`MissingDependency` without dask/distributed, :class:`PairsFileError` for a bad
    pairs file, ``TypeError``/``ValueError`` for bad options; a scene's failure is not raised but
    reported in the :class:`BatchResult`.
    """
    dask, distributed = _import_distributed()
    unknown = set(sampler_kwargs) - SAMPLER_OPTIONS
    if unknown:
        raise TypeError(f"run_batch() got unknown option(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(SAMPLER_OPTIONS))}")
    if uncertainty and sampler_kwargs.get("samples", dflt.DEFAULT_SAMPLES) < 2:
        raise ValueError("an uncertainty raster needs samples >= 2")
    if units not in UNITS:
        raise ValueError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    if scheduler is None and workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if isinstance(pairs, (str, os.PathLike)):
        pairs = read_pairs(pairs)
    pairs = [p if isinstance(p, Pair) else Pair(*map(os.fspath, p)) for p in pairs]
    say = log or (lambda message: None)
    t0 = time.perf_counter()

    from .bundled import choose_model

    results: list[SceneResult] = []
    todo: list[tuple[int, str]] = []
    for i, p in enumerate(pairs):
        outputs = [p.out] + ([p.uncertainty] if uncertainty else [])
        if all(os.path.exists(o) for o in outputs):
            results.append(SceneResult(p, "skipped"))
            continue
        try:
            for what, f in (("LR-HSI", p.lr), ("HR-MSI", p.msi)):
                if not os.path.isfile(f):
                    raise FileNotFoundError(f"{what} {f} does not exist")
            if not os.path.isdir(os.path.dirname(os.path.abspath(p.out))):
                raise FileNotFoundError(f"the output folder {os.path.dirname(os.path.abspath(p.out))} does not exist")
            chosen = os.fspath(model) if model else choose_model(p.lr, p.msi, None, models_dir)[0]
        except Exception as exc:  # noqa: BLE001 - any unreadable input fails this scene only, reported at the end
            results.append(SceneResult(p, "failed", error=f"{type(exc).__name__}: {exc}"))
            say(f"batch: FAILED {p.describe()}: {exc}")
            continue
        results.append(SceneResult(p, "pending", model=str(chosen)))
        todo.append((i, str(chosen)))

    with ExitStack() as stack:
        if isinstance(scheduler, distributed.Client):
            client = scheduler
        elif scheduler:
            client = stack.enter_context(distributed.Client(os.fspath(scheduler)))
        else:
            with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
                cluster = stack.enter_context(distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                                       dashboard_address=None, silence_logs=logging.CRITICAL))
            client = stack.enter_context(distributed.Client(cluster))
        n_workers = len(client.scheduler_info().get("workers", {})) or workers
        address = client.scheduler_info().get("address", "?")
        total, skipped = len(pairs), sum(r.status == "skipped" for r in results)
        split = units == "tiles" or (units == "auto" and len(todo) < n_workers)
        batch_id = uuid.uuid4().hex[:12]
        futures: dict = {}
        scenes: dict[int, dict] = {}  # split scenes: index -> scene, layout, parts folder, tasks left, attempts, start
        for i, chosen in todo:
            p = pairs[i]
            if not split:
                fut = client.submit(_run_scene, p.lr, p.msi, chosen, p.out, p.uncertainty if uncertainty else None,
                                    dict(sampler_kwargs), key=f"hsr-scene-{i}-{batch_id}", retries=1, pure=False)
                futures[fut] = (i, None)
                continue
            try:
                scenes[i] = _open_split(stack, p, chosen, uncertainty, sampler_kwargs, batch_id)
            except Exception as exc:  # noqa: BLE001 - this scene's inputs are refused, the others go on
                results[i].status, results[i].error = "failed", f"{type(exc).__name__}: {exc}"
                say(f"batch: FAILED {p.describe()}: {exc}")
                continue
            sc = scenes[i]
            if "run" not in sc:  # written on the client by the classical method the check chose
                results[i].status, results[i].attempts, results[i].notes = "done", 1, sc["scene"].notes
                results[i].worker = "client"
                say(f"batch: done {p.out} with {sc['method']} (chosen by the check, on the client)")
                del scenes[i]
                continue
            for g in range(len(sc["run"].groups)):
                fut = client.submit(_run_group, p.lr, p.msi, chosen, str(sc["parts"]), sc["scene"].setup, sc["options"], g,
                                    key=f"hsr-tiles-{i}-{g}-{batch_id}", retries=1, pure=False)
                futures[fut] = (i, g)
            say(f"batch: {p.out}: {len(sc['run'].tiles)} tiles in {len(sc['run'].groups)} work units")
        failed_early = sum(r.status == "failed" for r in results)
        on_client = sum(r.status == "done" for r in results)
        n_scene_tasks = sum(g is None for _, g in futures.values())
        say(f"batch: {total} scene(s), {skipped} already complete, {failed_early} refused, {n_scene_tasks} scene task(s) and "
            f"{len(futures) - n_scene_tasks} tile task(s) to run on {n_workers} worker(s) at {address}")
        attempts_fn = _attempts_function()
        finished = skipped + failed_early + on_client
        ran, t_submit = 0, time.perf_counter()
        for fut in distributed.as_completed(list(futures)):
            entry = futures.pop(fut, None)
            if entry is None:  # a tile task cancelled when its scene failed
                continue
            i, g = entry
            r = results[i]
            try:
                state = client.run_on_scheduler(attempts_fn, [fut.key]).get(fut.key)
            except Exception:  # noqa: BLE001 - the count is informative only
                state = None
            attempts = None if state is None else 1 + state[0] + (1 - state[1])
            ok = fut.status == "finished"
            info = fut.result() if ok else None
            exc = None if ok else fut.exception()
            fut.release()
            if g is not None:  # a tile task of a split scene
                sc = scenes[i]
                sc["attempts"] = max(sc["attempts"], attempts or 1)
                if r.status == "failed":
                    continue
                if not ok:
                    r.status, r.error, r.attempts = "failed", f"tiles {g}: {type(exc).__name__}: {exc}", sc["attempts"]
                    for other in [f for f, (k, _) in futures.items() if k == i]:
                        futures.pop(other)
                        other.cancel()
                    sc["close"]()
                    what = f"FAILED {r.pair.describe()} after {r.attempts} attempt(s): {r.error}"
                else:
                    sc["left"] -= 1
                    sc["workers"].add(info["worker"])
                    done = len(sc["run"].groups) - sc["left"]
                    if sc["left"]:
                        el = time.perf_counter() - sc["start"]
                        say(f"batch: {r.pair.out}: {done}/{len(sc['run'].groups)} tile units, about "
                            f"{_duration(el / done * sc['left'])} left")
                        continue
                    try:
                        _merge_scene(sc["scene"], sc["run"], sc["parts"], r.pair, uncertainty, sc["options"], sc["srf"])
                        r.status = "done"
                    except Exception as merge_exc:  # noqa: BLE001 - reported with the scene
                        r.status, r.error = "failed", f"merging the tiles: {type(merge_exc).__name__}: {merge_exc}"
                    finally:
                        sc["close"]()
                    r.attempts, r.seconds = sc["attempts"], time.perf_counter() - sc["start"]
                    r.worker, r.notes = ", ".join(sorted(sc["workers"])), sc["scene"].notes
                    what = (f"done {r.pair.out} ({r.seconds:.1f} s on {len(sc['workers'])} worker(s))" if r.status == "done"
                            else f"FAILED {r.pair.describe()}: {r.error}")
            else:
                r.attempts = attempts
                if ok:
                    r.status, r.seconds, r.worker, r.notes = "done", info["seconds"], info["worker"], info["notes"]
                    r.reused_model = info["reused_model"]
                    again = f", attempt {r.attempts}" if r.retried else ""
                    what = f"done {r.pair.out} ({r.seconds:.1f} s on {r.worker}{again})"
                else:
                    r.status = "failed"
                    r.error = f"{type(exc).__name__}: {exc}"
                    what = f"FAILED {r.pair.describe()} after {r.attempts or '?'} attempt(s): {r.error}"
            finished += 1
            ran += 1
            el = time.perf_counter() - t_submit
            left = len({k for k, _ in futures.values()})
            eta = f", about {_duration(el / ran * left)} left" if left else ""
            say(f"batch: {finished}/{total} scenes finished, {_duration(time.perf_counter() - t0)} elapsed{eta}: {what}")
    return BatchResult(results, time.perf_counter() - t0, n_workers, address)


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.batch", description="HSR-Diff super-resolution of many scenes on a "
                                 "Dask distributed cluster (one scene per task, one thread per worker).")
    ap.add_argument("--pairs", required=True, help="file with one LR<TAB>MSI<TAB>OUT line per scene (# comments allowed)")
    ap.add_argument("--model", default="", help="exported .onnx model for every scene (default: the bundled model that fits each)")
    ap.add_argument("--models-dir", default=None, help="folder of the bundled models (default: models/)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes without --scheduler (default 2)")
    ap.add_argument("--units", choices=UNITS, default="auto", help="work units: whole scenes, tiles of each scene, or auto "
                    "(tiles when there are fewer scenes than workers; default)")
    dflt.add_sampler_arguments(ap)
    dflt.add_output_arguments(ap)
    ap.add_argument("--uncertainty", action="store_true", help="also write each scene's per-pixel standard deviation to OUT_std.tif")
    ap.add_argument("--allow-fallback", action="store_true", help="run on the CPU when --device cuda/tensorrt is not usable")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the summary")
    args = ap.parse_args(argv)
    options = dict(steps=args.steps, sampler=args.sampler, eta=args.eta, seed=args.seed, samples=args.samples, tile=args.tile,
                   overlap=args.overlap, batch=args.batch, device=args.device, degradation=args.degradation, check=args.check,
                   allow_fallback=args.allow_fallback, output_type=args.output_type, blend=args.blend)
    try:
        res = run_batch(args.pairs, model=args.model or None, scheduler=args.scheduler, workers=args.workers,
                        models_dir=args.models_dir, uncertainty=args.uncertainty, log=None if args.quiet else _stderr,
                        units=args.units, **options)
    except (MissingDependency, PairsFileError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished outputs are complete, the others were not written (run again to resume)", file=sys.stderr)
        return 130
    for line in res.summary():
        print(line, file=sys.stderr if line.startswith("FAILED") else sys.stdout)
    return 0 if res.ok else 1


if __name__ == "__main__":
    from export.batch import main as _main  # the importable module, so that tasks pickle by reference

    sys.exit(_main())
