"""Algorithm: estimate the spectral response, PSF and registration offset of a real pair."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import HsrDiffAlgorithm
from .sensors import add_sensor_parameters, sensor_from_parameters


class EstimateSensorAlgorithm(HsrDiffAlgorithm):
    NAME = "estimatesensor"
    DISPLAY = "Estimate sensor response and PSF"
    GROUP = "Data preparation"
    GROUP_ID = "data"
    SHORT = "Estimates a real pair's sensor response, PSF shape and width and sub-pixel registration offset"
    TAGS = ("spectral response", "SRF", "PSF", "point spread function", "blur", "registration", "offset", "co-registration",
            "sensor", "calibration", "NNLS", "HySure", "hyperspectral", "multispectral", "fusion")
    HELP = (
        "Estimates, from a real LR-HSI / HR-MSI pair with no reference, the spectral response matrix of the "
        "multispectral sensor on the hyperspectral bands (non-negative least squares, as HySure), the point-spread "
        "function (a Gaussian or a pixel-integrated box, whichever explains the pair better: PSF_SHAPE; SIGMA its "
        "standard deviation in HR pixels, a box's side being sqrt(12) times that) and the sub-pixel registration "
        "offset of the LR grid "
        "(DY, DX in HR pixels: how far each LR pixel's footprint sits off the centre of its HR block, down / right "
        "positive; +-2.5 px at most) that best explain the LR-HSI from the HR-MSI. Offset and width are fitted first, "
        "with no response needed (the LR's principal components regressed on the shifted, blurred MSI); the response is "
        "then fitted through that PSF. "
        "An optional sensor hint confines each MSI band's fit to the HSI bands its nominal response covers, which "
        "conditions the fit much better. Writes the response as a CSV usable as a custom response elsewhere and "
        "reports the fit residuals (relative RMS)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", tr("Low-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", tr("High-resolution multispectral image")))
        add_sensor_parameters(self, optional=True)
        self.parameterDefinition("SENSOR").setDescription(tr("Sensor hint (optional)"))
        self.parameterDefinition("SENSOR").setDefaultValue(None)
        self.addParameter(QgsProcessingParameterFileDestination("SRF_OUT", tr("Estimated response CSV"), tr("CSV files (*.csv)")))
        self.addOutput(QgsProcessingOutputString("PSF_SHAPE", tr("PSF shape (gaussian or box)")))
        self.addOutput(QgsProcessingOutputNumber("SIGMA", tr("PSF standard deviation (HR pixels)")))
        self.addOutput(QgsProcessingOutputNumber("DY", tr("Registration offset down (HR pixels)")))
        self.addOutput(QgsProcessingOutputNumber("DX", tr("Registration offset right (HR pixels)")))
        self.addOutput(QgsProcessingOutputNumber("SCALE", tr("Scale factor")))
        self.addOutput(QgsProcessingOutputString("REPORT", tr("Report")))

    def execute(self, parameters, context, feedback):
        from core.jobs.estimate import estimate_files

        lr, _ = self.layer_path(parameters, "LR_HSI", context)
        msi, _ = self.layer_path(parameters, "HR_MSI", context)
        out = self.parameterAsFileOutput(parameters, "SRF_OUT", context)
        est = estimate_files(lr, msi, sensor_from_parameters(self, parameters, context), out, self.progress(feedback))
        lines = [f"scale {est.scale}, {est.describe()} (relative residual {est.psf_residual:.4f}; "
                 f"{est.psf_residual_centred:.4f} centred, nominal width)"]
        for name, gain, res in zip(est.msi_band_names, est.gain, est.srf_residual, strict=True):
            lines.append(f"{name}: gain {gain:.4f}, relative residual {res:.4f}")
        for line in lines:
            feedback.pushInfo(line)
        return {"SRF_OUT": out, "PSF_SHAPE": est.psf_shape, "SIGMA": est.sigma, "DY": est.dy, "DX": est.dx,
                "SCALE": est.scale, "REPORT": "\n".join(lines)}
