"""Super-resolve many scenes on a Dask ``distributed`` cluster.

``python -m export.batch --pairs PAIRS.tsv [--model M.onnx] [--scheduler tcp://HOST:8786 | --workers 2]
[--steps 25] [--sampler ddim|ancestral] [--eta 0] [--seed 0] [--samples 1] [--tile 256] [--overlap 32]
[--batch 1] [--device auto|cpu|cuda|tensorrt] [--degradation estimate|model] [--uncertainty]``

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

Work units are scenes: one task calls :func:`export.superresolve.superresolve` for one pair with
``threads=1``; a worker runs one scene at a time and opens each model once (an ONNX Runtime
session cached per worker process, keyed by the model file, its size and modification time, the
device and the fallback flag). The noise of every tile is seeded by its global pixel position, so
each output is bit-identical to a single-process ``superresolve(..., threads=1)`` run (the CLI's
``--threads 1``) whatever the number of workers or the order in which scenes finish.

One huge scene runs as one work unit through the streamed pipeline, in bounded memory (tiles are
read, denoised and written one at a time). It is not split into tiles across workers: the steps
before the tiles (the scan for empty bands, the degradation estimate, the streamed conditioning
base) are global to the scene, and the scene is one GeoTIFF written through one atomic writer, so
tiles as work units would need that scene-level setup shared and a merge step. For a single huge
scene, ``python -m export.superresolve`` with all the machine's threads is the faster choice.

Failures: a scene whose task raises is retried once (``retries=1``); a worker that dies while it
runs a scene (killed, out of memory) makes the scheduler run the scene again on another worker,
at most ``distributed.scheduler.allowed-failures`` times (set to 1 for the ``LocalCluster`` made
here; an existing cluster keeps its own setting). Every failed scene is reported at the end with
its error and the exit status is 1; nothing is skipped silently. A worker that died while writing
leaves its output's lock file (``OUT.tif.lock``); a retry on the same host takes the stale lock
over, one on another host sees it as live and fails naming it (delete it, then resume).

Resuming: a scene whose output already exists (and its ``_std`` raster with ``--uncertainty``) is
skipped. That is safe because a finished output is only ever renamed into place: it is written to
a temporary file that is renamed when the whole scene succeeded, so the final file exists only
when it is complete. An output left by a run with another model or other options is not detected;
delete it to compute it again.

Progress over the whole batch (scenes finished / total, elapsed time and an estimate of the time
left) goes to stderr. Needs ``dask`` and ``distributed`` besides the inference dependencies; they
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
           "INSTALL_COMMAND", "SAMPLER_OPTIONS"]

DASK_VERSION = "2026.8.0"
INSTALL_COMMAND = f"{sys.executable} -m pip install 'dask=={DASK_VERSION}' 'distributed=={DASK_VERSION}'"
"""The command that installs the optional dependencies into this interpreter (``python3 build.py setup`` does too)."""

SAMPLER_OPTIONS = frozenset({"steps", "sampler", "eta", "seed", "samples", "tile", "overlap", "batch", "device",
                             "allow_fallback", "allow_scale_mismatch", "degradation", "output_type"})
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


def run_batch(pairs: Iterable[Pair | tuple] | str | os.PathLike, model: str | os.PathLike | None = None, scheduler=None,
              workers: int = 2, models_dir: str | os.PathLike | None = None, uncertainty: bool = False,
              log: Callable[[str], None] | None = _stderr, **sampler_kwargs) -> BatchResult:
    """Super-resolve every pair on a Dask cluster; see the module docstring for the guarantees.

    ``pairs``: :class:`Pair` objects, ``(lr, msi, out)`` tuples, or the path of a pairs file.
    ``model``: one ``.onnx`` for every scene (checked against each pair), or None for the bundled
    model that fits each pair (from ``models_dir``, default ``models/``). ``scheduler``: an
    address (``tcp://host:8786``), a ``distributed.Client``, or None for a ``LocalCluster`` of
    ``workers`` processes with one thread each. ``uncertainty``: also write each scene's
    per-pixel standard deviation to :attr:`Pair.uncertainty` (needs ``samples >= 2``).
    ``sampler_kwargs``: any of :data:`SAMPLER_OPTIONS` (``steps``, ``sampler``, ``eta``, ...).
    ``log(message)`` gets the progress lines (default: stderr; None: silent).

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
        failed_early = sum(r.status == "failed" for r in results)
        say(f"batch: {total} scene(s), {skipped} already complete, {failed_early} refused, {len(todo)} to run on "
            f"{n_workers} worker(s) at {address}")
        batch_id = uuid.uuid4().hex[:12]
        futures = {}
        for i, chosen in todo:
            p = pairs[i]
            fut = client.submit(_run_scene, p.lr, p.msi, chosen, p.out, p.uncertainty if uncertainty else None, dict(sampler_kwargs),
                                key=f"hsr-scene-{i}-{batch_id}", retries=1, pure=False)
            futures[fut] = i
        attempts_fn = _attempts_function()
        finished = skipped + failed_early
        ran, t_submit = 0, time.perf_counter()
        for fut in distributed.as_completed(list(futures)):
            i = futures.pop(fut)
            r = results[i]
            try:
                state = client.run_on_scheduler(attempts_fn, [fut.key]).get(fut.key)
            except Exception:  # noqa: BLE001 - the count is informative only
                state = None
            r.attempts = None if state is None else 1 + state[0] + (1 - state[1])
            if fut.status == "finished":
                info = fut.result()
                r.status, r.seconds, r.worker, r.notes = "done", info["seconds"], info["worker"], info["notes"]
                r.reused_model = info["reused_model"]
                again = f", attempt {r.attempts}" if r.retried else ""
                what = f"done {r.pair.out} ({r.seconds:.1f} s on {r.worker}{again})"
            else:
                exc = fut.exception()
                r.status = "failed"
                r.error = f"{type(exc).__name__}: {exc}"
                what = f"FAILED {r.pair.describe()} after {r.attempts or '?'} attempt(s): {r.error}"
            fut.release()
            finished += 1
            ran += 1
            el = time.perf_counter() - t_submit
            left = len(futures)
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
    dflt.add_sampler_arguments(ap)
    dflt.add_output_arguments(ap)
    ap.add_argument("--uncertainty", action="store_true", help="also write each scene's per-pixel standard deviation to OUT_std.tif")
    ap.add_argument("--allow-fallback", action="store_true", help="run on the CPU when --device cuda/tensorrt is not usable")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the summary")
    args = ap.parse_args(argv)
    options = dict(steps=args.steps, sampler=args.sampler, eta=args.eta, seed=args.seed, samples=args.samples, tile=args.tile,
                   overlap=args.overlap, batch=args.batch, device=args.device, degradation=args.degradation,
                   allow_fallback=args.allow_fallback, output_type=args.output_type)
    try:
        res = run_batch(args.pairs, model=args.model or None, scheduler=args.scheduler, workers=args.workers,
                        models_dir=args.models_dir, uncertainty=args.uncertainty, log=None if args.quiet else _stderr, **options)
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
