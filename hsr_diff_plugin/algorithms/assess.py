"""Algorithm: score a fused raster against a reference."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .base import HsrDiffAlgorithm


class AssessAlgorithm(HsrDiffAlgorithm):
    NAME = "assess"
    DISPLAY = "Assess fusion quality"
    GROUP = "Quality"
    GROUP_ID = "quality"
    HELP = (
        "Scores a fused (sharpened) hyperspectral raster against a reference on their common area (same pixel grid "
        "and band count required). Metrics: PSNR (dB; per band with the reference band maximum as peak, averaged; "
        "and whole-cube), SSIM (per band, averaged), SAM (mean spectral angle, degrees), ERGAS (with the scale "
        "factor), RMSE, CC and UIQI. Bands without data in the reference are skipped; nodata pixels are excluded; "
        "an optional border (pixels) is excluded as in Loncan et al. Writes a CSV table and an HTML report with "
        "per-band PSNR and RMSE charts."
    )
    METRIC_OUTPUTS = ("PSNR", "SSIM", "SAM", "ERGAS", "RMSE")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer("REFERENCE", "Reference HR-HSI"))
        self.addParameter(QgsProcessingParameterRasterLayer("RESULT", "Fused HR-HSI"))
        self.addParameter(QgsProcessingParameterNumber("SCALE", "Scale factor (for ERGAS)", QgsProcessingParameterNumber.Integer,
                                                       4, minValue=1, maxValue=16))
        self.addParameter(QgsProcessingParameterNumber("BORDER", "Border excluded (pixels)", QgsProcessingParameterNumber.Integer,
                                                       0, minValue=0))
        self.addParameter(QgsProcessingParameterFileDestination("CSV", "Quality table (CSV)", "CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination("HTML", "Quality report (HTML)", "HTML files (*.html)",
                                                                optional=True, createByDefault=True))
        for key in self.METRIC_OUTPUTS:
            self.addOutput(QgsProcessingOutputNumber(key, key))

    def execute(self, parameters, context, feedback):
        from core.jobs.assess import assess_files

        ref, _ = self.layer_path(parameters, "REFERENCE", context)
        res, _ = self.layer_path(parameters, "RESULT", context)
        csv_out = self.parameterAsFileOutput(parameters, "CSV", context)
        html_out = self.parameterAsFileOutput(parameters, "HTML", context) or None
        a = assess_files(ref, res, self.parameterAsInt(parameters, "SCALE", context),
                         self.parameterAsInt(parameters, "BORDER", context), csv_out, html_out, self.progress(feedback))
        for note in a.notes:
            feedback.pushInfo(note)
        for k, v in a.metrics.items():
            feedback.pushInfo(f"{k}: {v:.4f}")
        out = {"CSV": csv_out, **{k: a.metrics[k.lower()] for k in self.METRIC_OUTPUTS}}
        if html_out:
            out["HTML"] = html_out
        return out
