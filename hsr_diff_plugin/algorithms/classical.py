"""Algorithm: classical fusion baselines (no model needed)."""

from qgis.core import (
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import DEGRADATION_OPTIONS, OUTPUT_TYPE_OPTIONS, HsrDiffAlgorithm, tr
from .sensors import add_sensor_parameters, sensor_from_parameters

METHODS = [("bicubic", "bicubic", tr("Bicubic upsampling of the LR-HSI")), ("gsa", "GSA", tr("GSA (adaptive Gram-Schmidt)")),
           ("mtf_glp_hs", "MTF-GLP-HS", tr("MTF-GLP-HS (generalised Laplacian pyramid)")), ("cnmf", "CNMF", tr("CNMF (coupled NMF)"))]
"""``(core.baselines key, short label for layer names, the dialog's choice)`` of each method."""


class ClassicalFusionAlgorithm(HsrDiffAlgorithm):
    NAME = "classicalfusion"
    DISPLAY = "Classical fusion (baseline)"
    GROUP = "Super-resolution"
    GROUP_ID = "superresolution"
    SHORT = "Fuses a hyperspectral and a multispectral image by bicubic, GSA, MTF-GLP-HS or CNMF (no model needed)"
    TAGS = ("hyperspectral", "multispectral", "fusion", "image fusion", "pansharpening", "hypersharpening", "sharpening",
            "super-resolution", "baseline", "bicubic", "GSA", "Gram-Schmidt", "MTF-GLP-HS", "Laplacian pyramid", "CNMF",
            "NMF", "EnMAP", "PRISMA", "Sentinel-2", "Landsat")
    HELP = (
        "Fuses an LR-HSI with an HR-MSI by a classical method, the bar HSR-Diff must clear and a fallback that needs "
        "no model: <b>bicubic</b> (LR-HSI only), <b>GSA</b> (Aiazzi et al. 2007, as extended to hyperspectral by "
        "Yokoya et al. 2017), <b>MTF-GLP-HS</b> (Vivone et al.), <b>CNMF</b> (Yokoya et al. 2012; uses the sensor "
        "response, estimated from the pair when none is given).<br>The pair must share a CRS, overlap, and have an "
        "integer pixel-size ratio (2-16) on aligned grids; the output covers their common area on the MSI grid, "
        "keeps the HSI wavelengths and is nodata where either input is. PSF sigma in HR pixels (0 = FWHM equals the "
        "scale). Degradation <i>estimate</i> (the default, when sigma is 0) fits the PSF (Gaussian or box) and the sub-pixel offset "
        "between the LR grid and the MSI to the pair and uses that filter (the log says what was found).<br>"
        "Bicubic and MTF-GLP-HS run window by window, so any area fits (MTF-GLP-HS fits its regression on a "
        "bounded sample of the area). GSA and CNMF hold the whole common area in memory (about 5 output-sized float32 "
        "cubes); they are refused before any work, with the size they would need, when it is not available."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", tr("Low-resolution hyperspectral image")))
        self.addParameter(QgsProcessingParameterRasterLayer("HR_MSI", tr("High-resolution multispectral image")))
        self.addParameter(QgsProcessingParameterEnum("METHOD", tr("Method"), options=[m[2] for m in METHODS], defaultValue=1))
        add_sensor_parameters(self, optional=True)
        self.parameterDefinition("SENSOR").setDescription(tr("Multispectral sensor (for CNMF; optional)"))
        self.parameterDefinition("SENSOR").setDefaultValue(None)
        self.addParameter(QgsProcessingParameterNumber("SIGMA", tr("PSF sigma (HR pixels; 0 = FWHM equals the scale)"),
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterEnum("DEGRADATION", tr("Degradation (when PSF sigma is 0)"),
                                                     options=[d[1] for d in DEGRADATION_OPTIONS], defaultValue=0))
        out_type = QgsProcessingParameterEnum("OUTPUT_TYPE", tr("Output data type"), options=[o[1] for o in OUTPUT_TYPE_OPTIONS],
                                              defaultValue=0)
        out_type.setFlags(out_type.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(out_type)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", tr("Fused HR-HSI")))

    def execute(self, parameters, context, feedback):
        from core.jobs.classical import fuse_classical_files

        lr, lr_name = self.layer_path(parameters, "LR_HSI", context)
        msi, msi_name = self.layer_path(parameters, "HR_MSI", context)
        method, label, _ = METHODS[self.parameterAsEnum(parameters, "METHOD", context)]
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        res = fuse_classical_files(method, lr, msi, out, sensor_from_parameters(self, parameters, context),
                                   self.parameterAsDouble(parameters, "SIGMA", context) or None, lr_name, msi_name,
                                   self.progress(feedback),
                                   DEGRADATION_OPTIONS[self.parameterAsEnum(parameters, "DEGRADATION", context)][0],
                                   OUTPUT_TYPE_OPTIONS[self.parameterAsEnum(parameters, "OUTPUT_TYPE", context)][0])
        for note in res.notes:
            feedback.pushInfo(note)
        feedback.pushInfo(f"{method}: {res.shape[0]} bands, {res.shape[2]} x {res.shape[1]} px, scale {res.scale}, "
                          f"{res.seconds:.1f} s")
        self.load_as(context, out, f"{lr_name} {label} x{res.scale}")
        return {"OUTPUT": out}
