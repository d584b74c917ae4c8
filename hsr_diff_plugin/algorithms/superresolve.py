"""Algorithm: super-resolve an LR-HSI with an HR-MSI and an exported HSR-Diff model (ONNX Runtime)."""

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..dependencies import require
from .base import CHECK_OPTIONS, DEGRADATION_OPTIONS, OUTPUT_TYPE_OPTIONS, HsrDiffAlgorithm

SAMPLERS = ["ddim", "ancestral"]
DEVICES = ["auto", "cpu", "cuda"]


def _defaults():
    """export.defaults, the one place the demo, the CLI, the benchmark and this dialog take defaults from."""
    from export import defaults

    return defaults


class SuperResolveAlgorithm(HsrDiffAlgorithm):
    NAME = "superresolve"
    DISPLAY = "Super-resolve hyperspectral image (HSR-Diff)"
    GROUP = "Super-resolution"
    GROUP_ID = "superresolution"
    SHORT = "Sharpens a hyperspectral image (EnMAP, PRISMA...) with a multispectral one (Sentinel-2...) by a diffusion model"
    TAGS = ("hyperspectral", "multispectral", "super-resolution", "sharpening", "pansharpening", "hypersharpening", "fusion",
            "image fusion", "data fusion", "diffusion", "deep learning", "CDFormer", "ONNX", "EnMAP", "PRISMA", "DESIS",
            "Sentinel-2", "Landsat", "spatial resolution", "HSI", "MSI")
    HELP = (
        "Fuses a low-resolution hyperspectral image (LR-HSI) with a high-resolution multispectral image (HR-MSI) of the "
        "same place into a high-resolution hyperspectral image with a conditional diffusion model (HSR-Diff CDFormer, "
        "exported to ONNX): it starts from Gaussian noise and denoises it step by step, guided by both images.<br>"
        "<b>Model</b>: an .onnx file written by <i>Train HSR-Diff model</i>; left empty, the bundled model whose metadata "
        "fits the layers is used (EnMAP + Sentinel-2 at scale 3, 4, 8; CAVE-style 31 bands + RGB at 4, 8). A model that "
        "does not fit the layers (band counts, scale factor) is refused with the reason.<br>"
        "<b>Input check</b> (the same here, in <tt>python -m export.superresolve</tt> and in <tt>export.batch</tt>): the "
        "MSI bands are matched to the model's by name (case, spaces and punctuation ignored), else by centre wavelength, "
        "else taken in order with a warning (refused when a band's name belongs to another position); an MSI with more "
        "bands gives the model those it names. Each layer's values (1st and 99th percentiles of a sample, GDAL scale, "
        "offset and nodata applied) are compared with the model's training data: reflectance 0-1 for a model trained "
        "on reflectance x 10000, or the reverse, is rescaled (int16 with a GDAL scale of 0.0001, as EnMAP L2A ships, "
        "reads as 0-1) and the output keeps the LR-HSI's units; a Sentinel-2 L2A offset of +1000 is removed; each with a "
        "warning in the log. Any other mismatch is refused with the numbers. An LR-HSI without band wavelengths gets "
        "the model's in the output.<br>"
        "<b>Degradation</b>: <i>estimate</i> (default) fits the pair's sub-pixel offset between the LR grid and the "
        "MSI and its PSF (a Gaussian or a box, and its width), and matches the conditioning base to them (offsets "
        "under 0.02 HR px and widths within 1 % count as the model's own; an implausible estimate falls back with a "
        "warning). It also estimates the LR-HSI's noise from its spectra and, below an SNR of 48 dB, denoises the "
        "LR-HSI in its signal subspace before fusion (every method the check compares reads the denoised LR-HSI). "
        "<i>nominal</i> keeps the model's PSF and the LR-HSI as it is. The log and the output's metadata say what "
        "was used.<br>"
        "<b>Check against classical methods</b> (default: on): before the output is written, the model and "
        "MTF-GLP-HS, GSA and CNMF fuse a crop of the pair degraded by the scale (Wald's protocol), and each result is "
        "compared with the LR-HSI it must give back (PSNR and SAM); their consistency with both inputs at full scale is "
        "reported too. The table is in the log. The model's result is written unless a classical method beats it on "
        "both PSNR and SAM; then that method's fusion of the whole pair is written instead (same grid, bands and "
        "units; the uncertainty raster is nodata), the log says which won and by how much, and the layer is named "
        "after it. <i>Report only</i> writes the model's result whatever the check finds. A pair smaller than 8 x "
        "scale LR pixels a side is checked on a smaller crop (it then catches large losses only); one under 4 x scale, "
        "or without a crop free of nodata, is not checked (a warning says so).<br>"
        "<b>Adaptation time</b> (seconds, default 0 = off; needs torch): before sampling, the model is fine-tuned on "
        "this pair itself for that long (Wald's protocol: the pair degraded by the scale is the input, the LR-HSI the "
        "target; plus the consistency of the full-scale result with both layers), on the CPU or the GPU, away from "
        "the crop the check scores (a pair so small that the check's crop is all of it is adapted on the consistency "
        "terms alone, over the whole pair). The check then compares the adapted model, the model as it was and the "
        "classical methods, and writes the best. <b>Adapted model</b> (optional) keeps the adapted .onnx for later runs (written "
        "only when the run succeeds). A pair under 16 x 16 LR px is refused; a budget too short for one training step "
        "keeps the model as it was, with a warning.<br>"
        "<b>Sampler</b>: DDIM (deterministic with eta 0; default 2 steps: on the held-out crops every bundled model "
        "is within 0.05 dB of its best PSNR at 2 steps and more steps only cost time, bench/results/diffusion.md) or "
        "the paper's ancestral sampler (at most 100 steps). <b>Samples</b> &gt; 1 averages several seeded samples "
        "and can write their per-pixel standard deviation, calibrated by the model's factors (fitted at the "
        "defaults with 4 samples; for some models combined with the result's local gradient) into a standard "
        "deviation of the error, as an <b>uncertainty</b> raster.<br><b>Tile size</b> and "
        "<b>overlap</b> (HR pixels) bound memory: tiles are blended with a smooth window and share one noise field, "
        "so there are no seams. <b>Device</b>: auto "
        "uses CUDA/TensorRT when ONNX Runtime can, else the CPU; the log says which ran.<br>The output covers the "
        "common area on the MSI grid, keeps the HSI wavelengths and is nodata where either input is. Needs numpy, GDAL "
        "and onnxruntime (see <i>Check dependencies</i>).<br>"
        "<b>Many scenes</b>: <i>Run as Batch Process...</i> (bottom of this dialog) runs one row per scene, one after the "
        "other, inside QGIS: fine for a few scenes. For tens to hundreds of scenes (a region, a time series) run "
        "<tt>python -m export.batch --pairs pairs.tsv --workers N</tt> outside QGIS instead (one "
        "<tt>LR&lt;TAB&gt;MSI&lt;TAB&gt;OUT</tt> line per scene; <tt>--scheduler ADDRESS</tt> for a Dask cluster): "
        "scenes run in parallel on Dask workers with the same results, failed scenes are retried once and listed, and "
        "a rerun skips the finished outputs. It needs <tt>dask</tt> and <tt>distributed</tt> (see the README)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", tr("Low-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", tr("High-resolution multispectral image")))
        d = _defaults()
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("HSR-Diff model (.onnx; empty = the bundled model that fits)"),
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterEnum("SAMPLER", tr("Sampler"), options=[tr("DDIM"), tr("Ancestral (paper)")],
                                                     defaultValue=SAMPLERS.index(d.DEFAULT_SAMPLER)))
        self.addParameter(QgsProcessingParameterNumber("STEPS", tr("Denoising steps"), QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_STEPS, minValue=1, maxValue=100))
        self.addParameter(QgsProcessingParameterNumber("SEED", tr("Random seed"), QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_SEED))
        self.addParameter(QgsProcessingParameterNumber("SAMPLES", tr("Number of samples (averaged)"),
                                                       QgsProcessingParameterNumber.Integer, d.DEFAULT_SAMPLES, minValue=1, maxValue=64))
        self.addParameter(QgsProcessingParameterNumber("TILE", tr("Tile size (HR pixels)"), QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_TILE, minValue=32, maxValue=4096))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", tr("Tile overlap (HR pixels)"), QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_OVERLAP, minValue=0, maxValue=1024))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", tr("Device"), options=[tr("Auto (GPU when available)"), tr("CPU"),
                                                                                    tr("CUDA")],
                                                     defaultValue=DEVICES.index(d.DEFAULT_DEVICE)))
        self.addParameter(QgsProcessingParameterEnum(
            "DEGRADATION", tr("Degradation (the PSF the conditioning base is matched to; the LR-HSI's noise)"),
            options=[d[1] for d in DEGRADATION_OPTIONS],
            defaultValue=[d[0] for d in DEGRADATION_OPTIONS].index(d.DEFAULT_DEGRADATION)))
        eta = QgsProcessingParameterNumber("ETA", tr("DDIM eta (0 = deterministic)"), QgsProcessingParameterNumber.Double,
                                           d.DEFAULT_ETA, minValue=0.0, maxValue=1.0)
        eta.setFlags(eta.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(eta)
        self.addParameter(QgsProcessingParameterEnum(
            "CHECK", tr("Check against classical methods (Wald's protocol on the pair)"), options=[c[1] for c in CHECK_OPTIONS],
            defaultValue=[c[0] for c in CHECK_OPTIONS].index(d.DEFAULT_CHECK)))
        blend = QgsProcessingParameterBoolean("BLEND", tr("On a noisy LR-HSI, average the model's result with CNMF's"),
                                              defaultValue=True)
        blend.setFlags(blend.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(blend)
        out_type = QgsProcessingParameterEnum("OUTPUT_TYPE", tr("Output data type"), options=[o[1] for o in OUTPUT_TYPE_OPTIONS],
                                              defaultValue=[o[0] for o in OUTPUT_TYPE_OPTIONS].index(d.DEFAULT_OUTPUT_TYPE))
        out_type.setFlags(out_type.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(out_type)
        self.addParameter(QgsProcessingParameterNumber("ADAPT_SECONDS", tr("Adaptation to this pair (seconds of fine-tuning; "
                                                       "0 = off, needs torch)"), QgsProcessingParameterNumber.Double, 0.0,
                                                       minValue=0.0, maxValue=86400.0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", tr("Super-resolved HR-HSI")))
        self.addParameter(QgsProcessingParameterRasterDestination("UNCERTAINTY", tr("Uncertainty (per-pixel std of the samples)"),
                                                                  optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination("ADAPTED_MODEL", tr("Adapted model (.onnx)"),
                                                                fileFilter="ONNX model (*.onnx)", optional=True,
                                                                createByDefault=False))

    def train_on_pair(self, lr, msi, lr_name, msi_name, seconds, feedback):
        """A small model trained from scratch on the pair for ``seconds`` (:func:`core.jobs.train.train_files`,
        self-supervised, a residual on MTF-GLP-HS), in a temporary folder kept for the run; ``(path, metadata,
        whether a validated checkpoint beat the MTF-GLP-HS base on the pair's held-out square)``."""
        import shutil
        import tempfile

        from export.adapt import train_on_pair
        from export.metadata import read_metadata

        folder = tempfile.mkdtemp(prefix="hsr_diff_pair_model_")
        try:
            path, beat = train_on_pair(lr, msi, seconds, folder, lr_name, msi_name, self.progress(feedback).sub(0.0, 0.6),
                                       feedback.pushInfo)
            return path, read_metadata(path), beat
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def write_base(self, parameters, context, feedback, lr, msi, lr_name, msi_name, model):
        """MTF-GLP-HS of the pair as the output, for a model trained on the pair that did not beat it."""
        import shutil

        from core.jobs.classical import fuse_classical_files

        shutil.rmtree(model.parent, ignore_errors=True)
        feedback.pushWarning("the model trained on this pair did not beat its MTF-GLP-HS base on the pair's held-out "
                             "square (PSNR and SAM), or the pair had no room for such a square or for holding the check's "
                             "crop out of training; MTF-GLP-HS is written instead. A longer adaptation time, or a larger "
                             "pair, may do better.")
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        res = fuse_classical_files("mtf_glp_hs", lr, msi, out, lr_name=lr_name, msi_name=msi_name,
                                   progress=self.progress(feedback).sub(0.6, 1.0),
                                   output_type=OUTPUT_TYPE_OPTIONS[self.parameterAsEnum(parameters, "OUTPUT_TYPE", context)][0])
        for note in res.notes:
            feedback.pushWarning(note)
        self.load_as(context, out, f"{lr_name} MTF-GLP-HS x{res.scale} (the pair's model did not beat it)")
        return {"OUTPUT": out}

    def execute(self, parameters, context, feedback):
        require("numpy", "osgeo.gdal", "onnxruntime", purpose="Super-resolution")
        adapt = self.parameterAsDouble(parameters, "ADAPT_SECONDS", context)
        if adapt > 0:
            require("torch", "onnx", purpose="Adapting the model to the pair")
        from export.bundled import NoModelFits, choose_model
        from export.superresolve import superresolve

        lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
        msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
        given = self.parameterAsFile(parameters, "MODEL", context) or None
        # Checks the model against the layers (or picks the bundled one that fits) before any work.
        trained = None
        try:
            model, md = choose_model(lr, msi, given, lr_name=lr_name, msi_name=msi_name)
        except NoModelFits as exc:
            if given or adapt <= 0:
                raise NoModelFits(f"{exc}. Set 'Adaptation to this pair' (ADAPT_SECONDS, e.g. 600) to train a model on "
                                  "this pair itself instead") from None
            feedback.pushWarning(f"{exc}; training a model on this pair for {adapt:g} s instead (Wald's protocol)")
            model, md, beat_base = self.train_on_pair(lr, msi, lr_name, msi_name, adapt, feedback)
            trained = model
            if not beat_base:  # the pair's own validation says the model is worse than its base: write the base
                return self.write_base(parameters, context, feedback, lr, msi, lr_name, msi_name, model)
        kind = "model trained on the pair" if trained is not None else "model" if given else "bundled model"
        feedback.pushInfo(f"{kind} {model.name}: {md.describe()}")
        if md.base != "bicubic":
            require("scipy", purpose=f"This model (a residual on the {md.base} fusion)")
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        unc = self.parameterAsOutputLayer(parameters, "UNCERTAINTY", context) if parameters.get("UNCERTAINTY") else None
        adapted = self.parameterAsFileOutput(parameters, "ADAPTED_MODEL", context) if parameters.get("ADAPTED_MODEL") else None
        if adapted and adapt <= 0:
            raise ValueError(self.tr("An adapted model is written only with an adaptation time above 0 s"))
        if trained is not None:  # trained on the pair already: nothing left to adapt; kept as the adapted model
            adapt = 0.0
        prog = self.progress(feedback) if trained is None else self.progress(feedback).sub(0.6, 1.0)
        with self.log_to(feedback):
            res = superresolve(
                lr, msi, model, out,
                steps=self.parameterAsInt(parameters, "STEPS", context),
                sampler=SAMPLERS[self.parameterAsEnum(parameters, "SAMPLER", context)],
                eta=self.parameterAsDouble(parameters, "ETA", context),
                seed=self.parameterAsInt(parameters, "SEED", context),
                samples=self.parameterAsInt(parameters, "SAMPLES", context),
                tile=self.parameterAsInt(parameters, "TILE", context),
                overlap=self.parameterAsInt(parameters, "OVERLAP", context),
                device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                uncertainty_path=unc, progress=prog.report, cancel=feedback.isCanceled,
                lr_name=lr_name, msi_name=msi_name,
                degradation=DEGRADATION_OPTIONS[self.parameterAsEnum(parameters, "DEGRADATION", context)][0],
                output_type=OUTPUT_TYPE_OPTIONS[self.parameterAsEnum(parameters, "OUTPUT_TYPE", context)][0],
                check=CHECK_OPTIONS[self.parameterAsEnum(parameters, "CHECK", context)][0],
                blend=self.parameterAsBoolean(parameters, "BLEND", context),
                adapt_seconds=adapt, adapted_model_path=adapted if trained is None else None,
            )
        if trained is not None:
            import shutil

            if adapted:
                shutil.copyfile(trained, adapted)
                res.adapted_model = adapted
            shutil.rmtree(trained.parent, ignore_errors=True)
        for note in res.notes:
            feedback.pushWarning(note)
        feedback.pushInfo(f"{res.bands} bands, {res.cols} x {res.rows} px (scale {res.scale}), {res.tiles} tile(s), "
                          f"{res.steps} {res.sampler} steps x {res.samples} sample(s) in {res.seconds:.1f} s on {res.provider_info}")
        name = f"{lr_name} HSR-Diff x{res.scale}" if res.method == "model" else \
            f"{lr_name} HSR-Diff x{res.scale} (adapted)" if res.method == "adapted" else \
            f"{lr_name} {res.method.upper().replace('_', '-')} x{res.scale} (chosen by the check)"
        self.load_as(context, out, name)
        outputs = {"OUTPUT": out}
        if unc:
            self.load_as(context, unc, self.tr("{name} uncertainty").format(name=name))
            outputs["UNCERTAINTY"] = unc
        if res.adapted_model:
            outputs["ADAPTED_MODEL"] = res.adapted_model
        return outputs
