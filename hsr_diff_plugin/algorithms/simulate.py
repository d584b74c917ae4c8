"""Algorithm: simulate an LR-HSI and an HR-MSI from a reference HR-HSI."""

import os

from qgis.core import (
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import HsrDiffAlgorithm
from .sensors import SENSORS, add_sensor_parameters, sensor_from_parameters


class SimulateAlgorithm(HsrDiffAlgorithm):
    NAME = "simulate"
    DISPLAY = "Simulate LR-HSI and HR-MSI"
    GROUP = "Data preparation"
    GROUP_ID = "data"
    SHORT = "Simulates an LR-HSI / HR-MSI pair from a reference hyperspectral image (Wald's protocol)"
    TAGS = ("simulation", "simulate", "Wald's protocol", "degradation", "spectral response", "SRF", "PSF",
            "point spread function", "hyperspectral", "multispectral", "Sentinel-2", "Landsat", "IKONOS", "training data",
            "test data", "fusion", "super-resolution")
    HELP = (
        "Simulates a fusion pair from a reference high-resolution hyperspectral image (Wald's protocol), for "
        "testing and training.<br><b>LR-HSI</b>: the reference blurred by a Gaussian point-spread function "
        "(sigma in HR pixels; 0 = the usual FWHM = scale rule) and decimated by the integer <b>scale</b>; pixels "
        "<i>scale</i> times larger, same origin and CRS, wavelengths kept.<br><b>HR-MSI</b>: the reference "
        "integrated over the chosen sensor's spectral response curves (resampled onto the HSI bands using their "
        "FWHM); same grid as the reference. Default bands: Sentinel-2 B02-B08, B8A, B11, B12; Landsat 8 B1-B7.<br>"
        "Optional white noise at the given SNR (dB; 0 = none), seeded. Nodata spreads to every pixel it touches. "
        "Works window by window on rasters of any size."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer("HR_HSI", tr("Reference HR-HSI")))
        add_sensor_parameters(self)
        self.addParameter(QgsProcessingParameterString("MSI_BANDS", tr("MSI bands (comma-separated; empty = sensor default)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber("SCALE", tr("Scale factor (HR pixels per LR pixel)"),
                                                       QgsProcessingParameterNumber.Integer, 4, minValue=2, maxValue=16))
        self.addParameter(QgsProcessingParameterNumber("SIGMA", tr("PSF sigma (HR pixels; 0 = FWHM equals the scale)"),
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber("SNR", tr("Noise SNR (dB; 0 = noise-free)"),
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber("SEED", tr("Random seed"), QgsProcessingParameterNumber.Integer, 0))
        self.addParameter(QgsProcessingParameterRasterDestination("LR_HSI", tr("Simulated LR-HSI")))
        self.addParameter(QgsProcessingParameterRasterDestination("HR_MSI", tr("Simulated HR-MSI")))

    def execute(self, parameters, context, feedback):
        from core.jobs.simulate import simulate_files

        hr, hr_name = self.layer_path(parameters, "HR_HSI", context)
        bands = [b.strip() for b in (self.parameterAsString(parameters, "MSI_BANDS", context) or "").split(",") if b.strip()]
        sigma = self.parameterAsDouble(parameters, "SIGMA", context)
        snr = self.parameterAsDouble(parameters, "SNR", context)
        lr_out = self.parameterAsOutputLayer(parameters, "LR_HSI", context)
        msi_out = self.parameterAsOutputLayer(parameters, "HR_MSI", context)
        sensor = sensor_from_parameters(self, parameters, context)
        res = simulate_files(hr, lr_out, msi_out, sensor,
                             self.parameterAsInt(parameters, "SCALE", context), sigma=sigma or None, msi_bands=bands or None,
                             snr_db=snr or None, seed=self.parameterAsInt(parameters, "SEED", context),
                             progress=self.progress(feedback))
        feedback.pushInfo(f"LR-HSI {res.lr_shape}, HR-MSI {res.msi_shape} with bands {', '.join(res.msi_band_names)}")
        self.load_as(context, lr_out, self.tr("{name} simulated LR-HSI 1:{scale}").format(name=hr_name, scale=res.scale))
        sensor_label = dict(SENSORS).get(sensor) or os.path.splitext(os.path.basename(str(sensor)))[0]
        self.load_as(context, msi_out, self.tr("{name} simulated {sensor}").format(name=hr_name, sensor=sensor_label))
        return {"LR_HSI": lr_out, "HR_MSI": msi_out}
