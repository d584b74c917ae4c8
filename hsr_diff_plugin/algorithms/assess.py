"""Algorithm: score a fused raster against a reference, or against the pair it was fused from."""

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .base import HsrDiffAlgorithm
from .sensors import add_sensor_parameters, sensor_from_parameters


class AssessAlgorithm(HsrDiffAlgorithm):
    NAME = "assess"
    DISPLAY = "Assess fusion quality"
    GROUP = "Quality"
    GROUP_ID = "quality"
    SHORT = "Scores a fused hyperspectral image against a reference (PSNR, SSIM, SAM, ERGAS...) or its input pair (QNR)"
    TAGS = ("quality", "assessment", "accuracy", "evaluation", "metrics", "PSNR", "SSIM", "SAM", "spectral angle", "ERGAS",
            "RMSE", "UIQI", "Q-index", "QNR", "no reference", "fusion", "pansharpening", "super-resolution", "hyperspectral",
            "report")
    HELP = (
        "Scores a fused (sharpened) hyperspectral raster.<br><b>With a reference</b> HR-HSI, on their common area (same "
        "pixel grid and band count required). Metrics: PSNR (dB; per band with the reference band maximum as peak, "
        "averaged; and whole-cube), SSIM (per band, averaged), SAM (mean spectral angle, degrees), ERGAS (with the scale "
        "factor), RMSE, CC and UIQI. Bands without data in the reference are skipped; nodata pixels are excluded; "
        "an optional border (pixels) is excluded as in Loncan et al.<br><b>Without a reference</b> (a real pair), give "
        "the LR-HSI and HR-MSI the result was fused from: the result (on the MSI grid) is checked against them. "
        "<i>Spectral consistency</i>: the result through the multispectral response vs the HR-MSI, per MSI band (RMSE, "
        "PSNR, CC). <i>Spatial consistency</i>: the result blurred by the pair's PSF (sub-pixel offset and width "
        "estimated from the pair) and decimated vs the LR-HSI, per band (RMSE, PSNR) and SAM. <i>QNR</i> (Alparone et "
        "al. 2008, with the MSI bands in the place of the pan): D_lambda from the Q index between pairs of bands (at "
        "most 32 bands spread over the range) of the result vs the LR-HSI, D_s from the Q between each band and each "
        "MSI band vs the same at the LR scale, QNR = (1 - D_lambda)(1 - D_s); Q over blocks of about 32 HR pixels. The "
        "response is the chosen sensor's (each MSI band's gain fitted) or, when none is chosen, estimated from the pair "
        "(NNLS). MSI pixels that are 0 in every band (a black no-data patch) and nodata are excluded, with the LR "
        "pixels they touch. The scale factor is the pair's.<br>Writes a CSV table and an HTML report with per-band charts."
    )
    METRIC_OUTPUTS = ("PSNR", "SSIM", "SAM", "ERGAS", "RMSE")
    NOREF_OUTPUTS = ("QNR", "D_LAMBDA", "D_S")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference HR-HSI (empty: assess against the pair)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("RESULT", "Fused HR-HSI"))
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", "LR-HSI the result was fused from (no reference)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", "HR-MSI the result was fused from (no reference)",
                                                            optional=True))
        add_sensor_parameters(self, optional=True)
        self.parameterDefinition("SENSOR").setDescription("Multispectral sensor response (no reference; empty = estimated "
                                                          "from the pair)")
        self.parameterDefinition("SENSOR").setDefaultValue(None)
        self.addParameter(QgsProcessingParameterNumber("SCALE", "Scale factor (for ERGAS)", QgsProcessingParameterNumber.Integer,
                                                       4, minValue=1, maxValue=16))
        self.addParameter(QgsProcessingParameterNumber("BORDER", "Border excluded (pixels)", QgsProcessingParameterNumber.Integer,
                                                       0, minValue=0))
        self.addParameter(QgsProcessingParameterFileDestination("CSV", "Quality table (CSV)", "CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination("HTML", "Quality report (HTML)", "HTML files (*.html)",
                                                                optional=True, createByDefault=True))
        for key in self.METRIC_OUTPUTS + self.NOREF_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(key, key))

    def execute(self, parameters, context, feedback):
        res, res_name = self.layer_path(parameters, "RESULT", context)
        csv_out = self.parameterAsFileOutput(parameters, "CSV", context)
        html_out = self.parameterAsFileOutput(parameters, "HTML", context) or None
        border = self.parameterAsInt(parameters, "BORDER", context)
        pair = [self.parameterAsRasterLayer(parameters, k, context) is not None for k in ("LR_HSI", "HR_MSI")]
        if self.parameterAsRasterLayer(parameters, "REFERENCE", context) is not None:
            from core.jobs.assess import assess_files

            if any(pair):
                feedback.pushInfo("A reference is given: the LR-HSI / HR-MSI are not used")
            ref, _ = self.layer_path(parameters, "REFERENCE", context)
            a = assess_files(ref, res, self.parameterAsInt(parameters, "SCALE", context), border, csv_out, html_out,
                             self.progress(feedback))
            out = {"CSV": csv_out, **{k: a.metrics[k.lower()] for k in self.METRIC_OUTPUTS}}
        elif all(pair):
            from core.jobs.assess import assess_noref_files

            lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
            msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
            a = assess_noref_files(res, lr, msi, sensor_from_parameters(self, parameters, context), border, csv_out,
                                   html_out, self.progress(feedback), res_name, lr_name, msi_name)
            feedback.pushInfo(f"scale {a.scale}; spectral response {a.response}; PSF sigma {a.psf_sigma:.3f} HR px, offset "
                              f"dy {a.psf_dy:+.3f} dx {a.psf_dx:+.3f} HR px; {a.lr_pixels} LR / {a.hr_pixels} HR pixels scored")
            out = {"CSV": csv_out, **{k: a.metrics[k.lower()] for k in self.NOREF_OUTPUTS}}
        else:
            raise QgsProcessingException("Give a reference HR-HSI, or both the LR-HSI and the HR-MSI the result was fused "
                                         "from (no-reference assessment)")
        for note in a.notes:
            feedback.pushInfo(note)
        for k, v in a.metrics.items():
            feedback.pushInfo(f"{k}: {v:.4f}")
        if html_out:
            out["HTML"] = html_out
        return out
