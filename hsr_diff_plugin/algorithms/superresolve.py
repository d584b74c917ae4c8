"""Algorithm: super-resolve an LR-HSI with an HR-MSI and an exported HSR-Diff model (ONNX Runtime)."""

from qgis.core import (
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..dependencies import require
from .base import DEGRADATION_OPTIONS, OUTPUT_TYPE_OPTIONS, HsrDiffAlgorithm

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
        "MSI and its PSF width, and matches the conditioning base to them (offsets under 0.1 HR px and widths within "
        "5 % count as the model's own; an implausible estimate falls back with a warning); <i>nominal</i> keeps the "
        "model's PSF. The log and the output's metadata say what was used.<br>"
        "<b>Sampler</b>: DDIM (deterministic with eta 0; default 2 steps: on the held-out crops every bundled model "
        "is within 0.05 dB of its best PSNR at 2 steps and more steps only cost time, bench/results/diffusion.md) or "
        "the paper's ancestral sampler (at most 100 steps). <b>Samples</b> &gt; 1 averages several seeded samples "
        "and can write their per-pixel standard deviation, times the model's calibration factor (fitted at the "
        "defaults with 4 samples), as an <b>uncertainty</b> raster.<br><b>Tile size</b> and "
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
            "DEGRADATION", tr("Degradation (the PSF the conditioning base is matched to)"), options=[d[1] for d in DEGRADATION_OPTIONS],
            defaultValue=[d[0] for d in DEGRADATION_OPTIONS].index(d.DEFAULT_DEGRADATION)))
        eta = QgsProcessingParameterNumber("ETA", tr("DDIM eta (0 = deterministic)"), QgsProcessingParameterNumber.Double,
                                           d.DEFAULT_ETA, minValue=0.0, maxValue=1.0)
        eta.setFlags(eta.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(eta)
        out_type = QgsProcessingParameterEnum("OUTPUT_TYPE", tr("Output data type"), options=[o[1] for o in OUTPUT_TYPE_OPTIONS],
                                              defaultValue=[o[0] for o in OUTPUT_TYPE_OPTIONS].index(d.DEFAULT_OUTPUT_TYPE))
        out_type.setFlags(out_type.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(out_type)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", tr("Super-resolved HR-HSI")))
        self.addParameter(QgsProcessingParameterRasterDestination("UNCERTAINTY", tr("Uncertainty (per-pixel std of the samples)"),
                                                                  optional=True, createByDefault=False))

    def execute(self, parameters, context, feedback):
        require("numpy", "osgeo.gdal", "onnxruntime", purpose="Super-resolution")
        from export.bundled import choose_model
        from export.superresolve import superresolve

        lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
        msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
        given = self.parameterAsFile(parameters, "MODEL", context) or None
        # Checks the model against the layers (or picks the bundled one that fits) before any work.
        model, md = choose_model(lr, msi, given, lr_name=lr_name, msi_name=msi_name)
        feedback.pushInfo(f"{'model' if given else 'bundled model'} {model.name}: {md.describe()}")
        if md.base != "bicubic":
            require("scipy", purpose=f"This model (a residual on the {md.base} fusion)")
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        unc = self.parameterAsOutputLayer(parameters, "UNCERTAINTY", context) if parameters.get("UNCERTAINTY") else None
        prog = self.progress(feedback)
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
            )
        for note in res.notes:
            feedback.pushWarning(note)
        feedback.pushInfo(f"{res.bands} bands, {res.cols} x {res.rows} px (scale {res.scale}), {res.tiles} tile(s), "
                          f"{res.steps} {res.sampler} steps x {res.samples} sample(s) in {res.seconds:.1f} s on {res.provider_info}")
        name = f"{lr_name} HSR-Diff x{res.scale}"
        self.load_as(context, out, name)
        outputs = {"OUTPUT": out}
        if unc:
            self.load_as(context, unc, self.tr("{name} uncertainty").format(name=name))
            outputs["UNCERTAINTY"] = unc
        return outputs
