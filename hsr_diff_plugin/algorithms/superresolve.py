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
from .base import DEGRADATION_OPTIONS, HsrDiffAlgorithm

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
    HELP = (
        "Fuses a low-resolution hyperspectral image (LR-HSI) with a high-resolution multispectral image (HR-MSI) of the "
        "same place into a high-resolution hyperspectral image with a conditional diffusion model (HSR-Diff CDFormer, "
        "exported to ONNX): it starts from Gaussian noise and denoises it step by step, guided by both images.<br>"
        "<b>Model</b>: an .onnx file written by <i>Train HSR-Diff model</i>; left empty, the bundled model whose metadata "
        "fits the layers is used (EnMAP + Sentinel-2 at scale 3, 4, 8; CAVE-style 31 bands + RGB at 4, 8). A model that "
        "does not fit the layers (band counts, scale factor) is refused with the reason.<br>"
        "<b>Degradation</b>: <i>estimate</i> (default) fits the pair's sub-pixel offset between the LR grid and the "
        "MSI and its PSF width, and matches the conditioning base to them (offsets under 0.1 HR px and widths within "
        "5 % count as the model's own; an implausible estimate falls back with a warning); <i>nominal</i> keeps the "
        "model's PSF. The log and the output's metadata say what was used.<br>"
        "<b>Sampler</b>: DDIM (deterministic with eta 0; default 25 steps) or the paper's ancestral sampler (at most "
        "100 steps). <b>Samples</b> &gt; 1 averages several seeded samples and can write their per-pixel standard "
        "deviation as an <b>uncertainty</b> raster.<br><b>Tile size</b> and <b>overlap</b> (HR pixels) bound memory: "
        "tiles are blended with a smooth window and share one noise field, so there are no seams. <b>Device</b>: auto "
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
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", "Low-resolution hyperspectral image"))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", "High-resolution multispectral image"))
        d = _defaults()
        self.addParameter(QgsProcessingParameterFile("MODEL", "HSR-Diff model (.onnx; empty = the bundled model that fits)",
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterEnum("SAMPLER", "Sampler", options=["DDIM", "Ancestral (paper)"],
                                                     defaultValue=SAMPLERS.index(d.DEFAULT_SAMPLER)))
        self.addParameter(QgsProcessingParameterNumber("STEPS", "Denoising steps", QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_STEPS, minValue=1, maxValue=100))
        self.addParameter(QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer, d.DEFAULT_SEED))
        self.addParameter(QgsProcessingParameterNumber("SAMPLES", "Number of samples (averaged)",
                                                       QgsProcessingParameterNumber.Integer, d.DEFAULT_SAMPLES, minValue=1, maxValue=64))
        self.addParameter(QgsProcessingParameterNumber("TILE", "Tile size (HR pixels)", QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_TILE, minValue=32, maxValue=4096))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", "Tile overlap (HR pixels)", QgsProcessingParameterNumber.Integer,
                                                       d.DEFAULT_OVERLAP, minValue=0, maxValue=1024))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=["Auto (GPU when available)", "CPU", "CUDA"],
                                                     defaultValue=DEVICES.index(d.DEFAULT_DEVICE)))
        self.addParameter(QgsProcessingParameterEnum(
            "DEGRADATION", "Degradation (the PSF the conditioning base is matched to)", options=[d[1] for d in DEGRADATION_OPTIONS],
            defaultValue=[d[0] for d in DEGRADATION_OPTIONS].index(d.DEFAULT_DEGRADATION)))
        eta = QgsProcessingParameterNumber("ETA", "DDIM eta (0 = deterministic)", QgsProcessingParameterNumber.Double,
                                           d.DEFAULT_ETA, minValue=0.0, maxValue=1.0)
        eta.setFlags(eta.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(eta)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Super-resolved HR-HSI"))
        self.addParameter(QgsProcessingParameterRasterDestination("UNCERTAINTY", "Uncertainty (per-pixel std of the samples)",
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
            )
        for note in res.notes:
            feedback.pushWarning(note)
        feedback.pushInfo(f"{res.bands} bands, {res.cols} x {res.rows} px (scale {res.scale}), {res.tiles} tile(s), "
                          f"{res.steps} {res.sampler} steps x {res.samples} sample(s) in {res.seconds:.1f} s on {res.provider_info}")
        outputs = {"OUTPUT": out}
        if unc:
            outputs["UNCERTAINTY"] = unc
        return outputs
