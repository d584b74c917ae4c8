"""Algorithm: train an HSR-Diff model (PyTorch) and export it to ONNX."""

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..dependencies import require
from .base import DEGRADATION_OPTIONS, HsrDiffAlgorithm
from .sensors import add_sensor_parameters, sensor_from_parameters

PRESETS = ["tiny", "small", "paper"]
INPUTS = ("REFERENCE", "LR_HSI", "HR_MSI")
COMBINATIONS = ({"REFERENCE"}, {"LR_HSI", "HR_MSI"})
"""The inputs of A (supervised, from a reference) and B (self-supervised, from a real pair)."""


class TrainAlgorithm(HsrDiffAlgorithm):
    NAME = "train"
    DISPLAY = "Train HSR-Diff model"
    GROUP = "Super-resolution"
    GROUP_ID = "superresolution"
    SHORT = "Trains an HSR-Diff model from a reference hyperspectral image or a real pair and exports it to ONNX"
    TAGS = ("training", "train", "deep learning", "diffusion", "model", "CDFormer", "PyTorch", "ONNX", "hyperspectral",
            "multispectral", "super-resolution", "fusion", "pansharpening", "self-supervised", "Wald's protocol", "EnMAP",
            "Sentinel-2")
    HELP = (
        "Trains the HSR-Diff conditional diffusion model (CDFormer) and exports it to ONNX for <i>Super-resolve</i>.<br>"
        "<b>Which inputs</b>: fill exactly one of the two combinations and leave the other empty.<br>"
        "<b>A. Reference HR-HSI alone</b> (supervised): LR-HSI / HR-MSI pairs are simulated from it with the chosen "
        "multispectral sensor response (required) and a Gaussian PSF (sigma in HR pixels; 0 = FWHM equals the scale). "
        "Use it when you have a sharp hyperspectral image (airborne, or a CAVE-style scene).<br>"
        "<b>B. Real LR-HSI + real HR-MSI</b> (self-supervised, Wald's protocol): both are degraded by the scale and "
        "the model learns to rebuild the LR-HSI. The degradation is the pair's own PSF, estimated from it (sub-pixel "
        "offset, shape and width, printed in the log; <i>Degradation</i>, used when PSF sigma is 0), so that the degraded "
        "MSI lies on the LR-HSI's footprints as the real MSI lies on the unknown HR-HSI's; the sensor response is "
        "optional (without it the spectral-consistency loss is off). Use it for the satellite pair you want to sharpen "
        "(EnMAP + Sentinel-2).<br>"
        "Any other combination (all three, the reference with one image of the pair, one image alone) is refused before "
        "the run starts.<br><b>Model size</b>: tiny (tests), small (trainable on a CPU in tens of minutes), paper (31.6 M "
        "parameters, needs a GPU). <b>Progressive</b> learning trains the first 60 % of the iterations on half-size "
        "patches (the paper's small-then-large schedule). Patch size in HR pixels is rounded to a multiple of "
        "lcm(8, scale) and reduced, with a note in the log, when the image is too small for it (for B the training "
        "grid is the LR-HSI's). <b>Validation</b>: a square of about a quarter of the image (at most 128 px) is held "
        "out, validated on every tenth of the run, and the model exported is the best validated checkpoint. A real "
        "pair needs at least 16 x 16 valid LR pixels.<br><b>Training time budget</b> (seconds; 0 = use the "
        "iterations): times the first steps, fits the number of iterations (and the schedule) to the budget and "
        "stops when it is spent; a budget too short for one validated step is refused.<br>Checkpoints go to the "
        "checkpoint folder every tenth of the run and on cancel; running again "
        "with the same folder resumes; a folder trained with another scale, band set, model size or base is refused "
        "unless <i>Resume even if the configuration changed</i> is checked. A real pair's pixel-size ratio must equal "
        "the scale factor. Needs PyTorch (see <i>Check dependencies</i>)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(
            "REFERENCE", tr("A. Reference HR-HSI (alone: pairs are simulated from it; leave B empty)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "LR_HSI", tr("B. Real LR-HSI (with the real HR-MSI below; leave A empty)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "HR_MSI", tr("B. Real HR-MSI of the same place (with the real LR-HSI above)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber("SCALE", tr("Scale factor"), QgsProcessingParameterNumber.Integer, 4,
                                                       minValue=2, maxValue=16))
        add_sensor_parameters(self, optional=True)
        self.parameterDefinition("SENSOR").setDescription(tr("Multispectral sensor response (needed for A, optional for B)"))
        self.addParameter(QgsProcessingParameterNumber("SIGMA", tr("PSF sigma (HR pixels; 0 = FWHM equals the scale)"),
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterEnum(
            "DEGRADATION", tr("B. Degradation Wald's protocol applies to the pair (when PSF sigma is 0)"),
            options=[d[1] for d in DEGRADATION_OPTIONS], defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("PRESET", tr("Model size"), options=PRESETS, defaultValue=1))
        self.addParameter(QgsProcessingParameterNumber("ITERATIONS", tr("Training iterations"), QgsProcessingParameterNumber.Integer,
                                                       2000, minValue=2))
        self.addParameter(QgsProcessingParameterNumber(
            "TRAIN_SECONDS", tr("Training time budget (seconds; 0 = use the iterations)"), QgsProcessingParameterNumber.Integer,
            0, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean("PROGRESSIVE", tr("Progressive learning (small patches first)"), True))
        self.addParameter(QgsProcessingParameterNumber("PATCH", tr("Patch size (HR pixels)"), QgsProcessingParameterNumber.Integer,
                                                       64, minValue=8, maxValue=1024))
        self.addParameter(QgsProcessingParameterNumber("BATCH", tr("Batch size"), QgsProcessingParameterNumber.Integer, 4,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterNumber("SEED", tr("Random seed"), QgsProcessingParameterNumber.Integer, 0))
        self.addParameter(QgsProcessingParameterFileDestination("MODEL", tr("Trained model (.onnx)"), tr("ONNX models (*.onnx)")))
        self.addParameter(QgsProcessingParameterFolderDestination("CHECKPOINTS", tr("Checkpoint folder (resumable)")))
        self.addParameter(QgsProcessingParameterBoolean(
            "ALLOW_CONFIG_CHANGE", tr("Resume even if the configuration changed (scale, bands, model size, base)"), False))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API name)
        """Refuses, before the run, any inputs but A (the reference alone) or B (the real pair together)."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        given = {k for k in INPUTS if parameters.get(k)}
        if given in COMBINATIONS:
            return True, ""
        names = ", ".join(self.parameterDefinition(k).description() for k in INPUTS if k in given) or self.tr("none")
        return False, self.tr("Give either A. the reference HR-HSI alone (supervised) or B. the real LR-HSI and the real HR-MSI "
                              "together (self-supervised); given: {names}").format(names=names)

    def execute(self, parameters, context, feedback):
        require("torch", "onnx", "safetensors", purpose="Training")
        from core.jobs.train import train_files

        ref = lr = msi = ref_name = lr_name = msi_name = None
        if parameters.get("REFERENCE"):
            ref, ref_name = self.layer_path(parameters, "REFERENCE", context)
        if parameters.get("LR_HSI"):
            lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
        if parameters.get("HR_MSI"):
            msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
        model = self.parameterAsFileOutput(parameters, "MODEL", context)
        ckpt = self.parameterAsString(parameters, "CHECKPOINTS", context)
        seconds = self.parameterAsInt(parameters, "TRAIN_SECONDS", context)
        res = train_files(
            model, ckpt, self.parameterAsInt(parameters, "SCALE", context), progress=self.progress(feedback), log=feedback.pushInfo,
            reference=ref, lr_hsi=lr, hr_msi=msi, sensor=sensor_from_parameters(self, parameters, context),
            sigma=self.parameterAsDouble(parameters, "SIGMA", context) or None,
            degradation=DEGRADATION_OPTIONS[self.parameterAsEnum(parameters, "DEGRADATION", context)][0],
            preset=PRESETS[self.parameterAsEnum(parameters, "PRESET", context)],
            iterations=self.parameterAsInt(parameters, "ITERATIONS", context),
            progressive=self.parameterAsBool(parameters, "PROGRESSIVE", context),
            patch=self.parameterAsInt(parameters, "PATCH", context), batch=self.parameterAsInt(parameters, "BATCH", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            allow_config_change=self.parameterAsBool(parameters, "ALLOW_CONFIG_CHANGE", context), lr_name=lr_name,
            msi_name=msi_name, reference_name=ref_name, seconds=seconds or None,
        )
        chosen = f"step {res.selected_step} (best validated)" if res.selected_step is not None else f"step {res.steps} (last)"
        feedback.pushInfo(f"trained {res.steps} steps in {res.seconds:.0f} s; exported {chosen}; "
                          f"validation {res.validation or 'n/a'}")
        return {"MODEL": model, "CHECKPOINTS": ckpt}
