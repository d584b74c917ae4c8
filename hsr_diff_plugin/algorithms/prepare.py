"""Algorithm: prepare an LR-HSI / HR-MSI pair (EnMAP / Sentinel-2 products or any rasters) for Super-resolve."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import HsrDiffAlgorithm


class PreparePairAlgorithm(HsrDiffAlgorithm):
    NAME = "preparepair"
    DISPLAY = "Prepare pair (EnMAP / Sentinel-2 or any raster pair)"
    GROUP = "Data preparation"
    GROUP_ID = "data"
    SHORT = "Turns an EnMAP L2A and a Sentinel-2 L2A product (or any two rasters) into the co-registered pair Super-resolve takes"
    TAGS = ("EnMAP", "Sentinel-2", "SAFE", "L2A", "METADATA.XML", "MTD_MSIL2A", "BOA_ADD_OFFSET", "co-registration",
            "coregistration", "registration", "AROSICS", "warp", "resample", "stack", "preprocessing", "hyperspectral",
            "multispectral", "fusion")
    HELP = (
        "Builds the two rasters <i>Super-resolve</i> takes from sensor products or plain rasters.<br>"
        "<b>LR-HSI</b>: a raster layer, or an EnMAP L2A product (its <tt>METADATA.XML</tt> or folder: wavelengths, FWHM, "
        "gains and bad bands come from the XML). <b>HR-MSI</b>: one multi-band raster or several single-band rasters "
        "(names from the band descriptions or B02-style file names), or a Sentinel-2 <tt>.SAFE</tt> folder (band files, "
        "<tt>BOA_ADD_OFFSET</tt> and quantification from <tt>MTD_MSIL2A.xml</tt>).<br>"
        "The MSI bands are stacked in the <b>model</b>'s order (else a Sentinel-2 product's land bands B02-B12), "
        "offsets removed, and both outputs written as float32 reflectance x 10000 (the units of EnMAP L2A and of the "
        "bundled models; x 1 for a model trained on reflectance 0-1); a raster without units is taken as "
        "reflectance 0-1 when its values stay below 2, else as x 10000.<br>"
        "<b>Co-registration</b> (default on): a whole-LR-pixel shift by phase correlation (as AROSICS), then the "
        "sub-pixel offset of <i>Estimate sensor response and PSF</i>, applied and re-estimated until under 0.05 HR "
        "pixels. The LR-HSI keeps its pixels; its grid origin moves onto the MSI's geolocation.<br>"
        "Every MSI band is warped once (GDAL) onto the grid aligned with the LR grid at pixel = LR pixel / "
        "<b>scale</b> (0 = the model's scale, else the nearest integer ratio): <i>average</i> for finer bands, "
        "<i>cubic</i> for coarser ones, <i>near</i> for bands already on it; both outputs cover the common extent "
        "in whole LR pixels. The log and the optional HTML <b>report</b> list the bands, offsets, resampling, "
        "the shift found and the grids."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer("LR_HSI", tr("Low-resolution hyperspectral image (raster)"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFile("LR_PRODUCT", tr("...or an EnMAP L2A product (METADATA.XML or its folder)"),
                                                     optional=True, fileFilter=tr("EnMAP METADATA.XML or product folder (*)")))
        self.addParameter(QgsProcessingParameterMultipleLayers("HR_MSI", tr("High-resolution multispectral image (one or more rasters)"),
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile("HR_MSI_PRODUCT", tr("...or a Sentinel-2 product (.SAFE folder)"),
                                                     QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterNumber("SCALE", tr("Scale factor (0 = the model's, else the nearest integer ratio)"),
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=16))
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("Model to prepare for (.onnx; band order, scale, units)"),
                                                     extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterBoolean("COREGISTER", tr("Co-register the pair"), True))
        self.addParameter(QgsProcessingParameterRasterDestination("LR_OUT", tr("Prepared LR-HSI")))
        self.addParameter(QgsProcessingParameterRasterDestination("MSI_OUT", tr("Prepared HR-MSI")))
        self.addParameter(QgsProcessingParameterFileDestination("REPORT", tr("Report (HTML)"), tr("HTML files (*.html)"),
                                                                optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("SCALE_USED", tr("Scale factor used")))
        self.addOutput(QgsProcessingOutputNumber("DY", tr("LR grid moved down (HR pixels)")))
        self.addOutput(QgsProcessingOutputNumber("DX", tr("LR grid moved right (HR pixels)")))

    def _one_of(self, raster: str | None, product: str | None, what: str, product_name: str):
        if bool(raster) == bool(product):
            raise QgsProcessingException(self.tr("{what}: give either the raster(s) or the {product}, not {n}").format(
                what=what, product=product_name, n="both" if raster else "neither"))
        return raster or product

    def execute(self, parameters, context, feedback):
        from core.jobs.prepare import DEFAULT_REFLECTANCE_SCALE, prepare_pair

        lr_layer = self.layer_path(parameters, "LR_HSI", context)[0] if parameters.get("LR_HSI") else None
        lr = self._one_of(lr_layer, self.parameterAsFile(parameters, "LR_PRODUCT", context), "LR-HSI", "EnMAP product")
        msi_layers = []
        for layer in self.parameterAsLayerList(parameters, "HR_MSI", context):
            if layer.providerType() != "gdal":
                raise QgsProcessingException(f"Layer '{layer.name()}' is a {layer.providerType()} layer; save it as a GeoTIFF first")
            msi_layers.append(layer.source().split("|")[0])
        msi = self._one_of(msi_layers, self.parameterAsFile(parameters, "HR_MSI_PRODUCT", context), "HR-MSI",
                           "Sentinel-2 product")
        scale = self.parameterAsInt(parameters, "SCALE", context)
        order, units = None, DEFAULT_REFLECTANCE_SCALE
        model = self.parameterAsFile(parameters, "MODEL", context)
        if model:
            from export.metadata import read_metadata

            md = read_metadata(model)
            order = md.msi_band_names
            scale = scale or md.scale
            units = 1.0 if max(abs(float(v)) for v in md.msi_normalization.offset) < 2 else DEFAULT_REFLECTANCE_SCALE
            feedback.pushInfo(self.tr("model {name}: MSI bands {bands}, scale {scale}, reflectance x {units:g}").format(
                name=model, bands=", ".join(order or ["(unnamed)"]), scale=md.scale, units=units))
        lr_out = self.parameterAsOutputLayer(parameters, "LR_OUT", context)
        msi_out = self.parameterAsOutputLayer(parameters, "MSI_OUT", context)
        report = self.parameterAsFileOutput(parameters, "REPORT", context) if parameters.get("REPORT") else None
        res = prepare_pair(lr, msi, lr_out, msi_out, report, scale, order, units,
                           self.parameterAsBoolean(parameters, "COREGISTER", context), self.progress(feedback))
        for note in res.notes:
            (feedback.pushWarning if note.startswith("WARNING") else feedback.pushInfo)(note)
        feedback.pushInfo(self.tr("pair prepared in {s:.1f} s").format(s=res.seconds))
        self.load_as(context, lr_out, self.tr("prepared LR-HSI 1:{scale}").format(scale=res.scale))
        self.load_as(context, msi_out, self.tr("prepared HR-MSI ({bands})").format(bands=", ".join(res.msi_band_names)))
        out = {"LR_OUT": lr_out, "MSI_OUT": msi_out, "SCALE_USED": res.scale, "DY": res.shift[0], "DX": res.shift[1]}
        if report:
            out["REPORT"] = report
        return out
