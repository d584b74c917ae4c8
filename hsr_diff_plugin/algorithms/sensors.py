"""The sensor-response parameter shared by several algorithms: a named sensor or a CSV file."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterEnum, QgsProcessingParameterFile

SENSORS = [("sentinel2", "Sentinel-2 MSI"), ("landsat8", "Landsat 8/9 OLI"), ("nikon_d700", "RGB camera (Nikon D700)"),
           ("ikonos", "IKONOS"), ("csv", "Custom response CSV")]


def add_sensor_parameters(alg, default: int = 0, optional: bool = False) -> None:
    alg.addParameter(QgsProcessingParameterEnum("SENSOR", "Multispectral sensor response", options=[s[1] for s in SENSORS],
                                                defaultValue=default, optional=optional))
    alg.addParameter(QgsProcessingParameterFile("SRF_CSV", "Custom response CSV (wavelength_nm, band1, band2, ...)",
                                                extension="csv", optional=True))


def sensor_from_parameters(alg, parameters, context) -> str | None:
    """A sensor name, a CSV path, or None when the optional parameter is unset."""
    if parameters.get("SENSOR") is None and not parameters.get("SRF_CSV"):
        return None
    key = SENSORS[alg.parameterAsEnum(parameters, "SENSOR", context)][0]
    csv_path = alg.parameterAsFile(parameters, "SRF_CSV", context)
    if key == "csv" or csv_path:
        if not csv_path:
            raise QgsProcessingException("Custom response CSV chosen but no CSV file given")
        return csv_path
    return key
