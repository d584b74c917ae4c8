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
from .base import HsrDiffAlgorithm
from .sensors import add_sensor_parameters, sensor_from_parameters

PRESETS = ["tiny", "small", "paper"]


class TrainAlgorithm(HsrDiffAlgorithm):
    NAME = "train"
    DISPLAY = "Train HSR-Diff model"
    GROUP = "Super-resolution"
    GROUP_ID = "superresolution"
    HELP = (
        "Trains the HSR-Diff conditional diffusion model (CDFormer) and exports it to ONNX for <i>Super-resolve</i>.<br>"
        "<b>From a reference HR-HSI</b> (supervised): LR-HSI / HR-MSI pairs are simulated from it with the chosen "
        "multispectral sensor response and a Gaussian PSF (sigma in HR pixels; 0 = FWHM equals the scale).<br>"
        "<b>From a real LR-HSI + HR-MSI pair</b> (self-supervised, Wald's protocol): both are degraded by the scale and "
        "the model learns to rebuild the LR-HSI; the sensor response is optional (without it the spectral-consistency "
        "loss is off).<br><b>Model size</b>: tiny (tests), small (trainable on a CPU in tens of minutes), paper (31.6 M "
        "parameters, needs a GPU). <b>Progressive</b> learning trains the first 60 % of the iterations on half-size "
        "patches (the paper's small-then-large schedule). Patch size in HR pixels is rounded to a multiple of "
        "lcm(8, scale).<br>Checkpoints go to the checkpoint folder every tenth of the run and on cancel; running again "
        "with the same folder resumes; a folder trained with another scale, band set, model size or base is refused "
        "unless <i>Resume even if the configuration changed</i> is checked. A real pair's pixel-size ratio must equal "
        "the scale factor. Needs PyTorch (see <i>Check dependencies</i>)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference HR-HSI (supervised)", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", "Real LR-HSI (self-supervised)", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", "Real HR-MSI (self-supervised)", optional=True))
        self.addParameter(QgsProcessingParameterNumber("SCALE", "Scale factor", QgsProcessingParameterNumber.Integer, 4,
                                                       minValue=2, maxValue=16))
        add_sensor_parameters(self, optional=True)
        self.addParameter(QgsProcessingParameterNumber("SIGMA", "PSF sigma (HR pixels; 0 = FWHM equals the scale)",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterEnum("PRESET", "Model size", options=PRESETS, defaultValue=1))
        self.addParameter(QgsProcessingParameterNumber("ITERATIONS", "Training iterations", QgsProcessingParameterNumber.Integer,
                                                       2000, minValue=2))
        self.addParameter(QgsProcessingParameterBoolean("PROGRESSIVE", "Progressive learning (small patches first)", True))
        self.addParameter(QgsProcessingParameterNumber("PATCH", "Patch size (HR pixels)", QgsProcessingParameterNumber.Integer, 64,
                                                       minValue=8, maxValue=1024))
        self.addParameter(QgsProcessingParameterNumber("BATCH", "Batch size", QgsProcessingParameterNumber.Integer, 4, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("SEED", "Random seed", QgsProcessingParameterNumber.Integer, 0))
        self.addParameter(QgsProcessingParameterFileDestination("MODEL", "Trained model (.onnx)", "ONNX models (*.onnx)"))
        self.addParameter(QgsProcessingParameterFolderDestination("CHECKPOINTS", "Checkpoint folder (resumable)"))
        self.addParameter(QgsProcessingParameterBoolean(
            "ALLOW_CONFIG_CHANGE", "Resume even if the configuration changed (scale, bands, model size, base)", False))

    def execute(self, parameters, context, feedback):
        require("torch", "onnx", "safetensors", purpose="Training")
        from core.jobs.train import train_files

        ref = lr = msi = lr_name = msi_name = None
        if parameters.get("REFERENCE"):
            ref, _ = self.layer_path(parameters, "REFERENCE", context)
        if parameters.get("LR_HSI"):
            lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
        if parameters.get("HR_MSI"):
            msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
        model = self.parameterAsFileOutput(parameters, "MODEL", context)
        ckpt = self.parameterAsString(parameters, "CHECKPOINTS", context)
        res = train_files(
            model, ckpt, self.parameterAsInt(parameters, "SCALE", context), progress=self.progress(feedback), log=feedback.pushInfo,
            reference=ref, lr_hsi=lr, hr_msi=msi, sensor=sensor_from_parameters(self, parameters, context),
            sigma=self.parameterAsDouble(parameters, "SIGMA", context) or None,
            preset=PRESETS[self.parameterAsEnum(parameters, "PRESET", context)],
            iterations=self.parameterAsInt(parameters, "ITERATIONS", context),
            progressive=self.parameterAsBool(parameters, "PROGRESSIVE", context),
            patch=self.parameterAsInt(parameters, "PATCH", context), batch=self.parameterAsInt(parameters, "BATCH", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            allow_config_change=self.parameterAsBool(parameters, "ALLOW_CONFIG_CHANGE", context), lr_name=lr_name,
            msi_name=msi_name,
        )
        feedback.pushInfo(f"trained {res.steps} steps in {res.seconds:.0f} s; validation {res.validation or 'n/a'}")
        return {"MODEL": model, "CHECKPOINTS": ckpt}
