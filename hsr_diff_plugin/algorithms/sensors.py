"""The sensor-response parameter shared by several algorithms: a named sensor or a CSV file."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProcessingParameterFile

from .base import tr

SENSORS = [("sentinel2", tr("Sentinel-2 MSI")), ("landsat8", tr("Landsat 8/9 OLI")), ("nikon_d700", tr("RGB camera (Nikon D700)")),
           ("ikonos", tr("IKONOS")), ("csv", tr("Custom response CSV"))]


def add_sensor_parameters(alg, default: int = 0, optional: bool = False) -> None:
    alg.addParameter(QgsProcessingParameterEnum("SENSOR", tr("Multispectral sensor response"), options=[s[1] for s in SENSORS],
                                                defaultValue=default, optional=optional))
    alg.addParameter(QgsProcessingParameterFile("SRF_CSV", tr("Custom response CSV (wavelength_nm, band1, band2, ...)"),
                                                extension="csv", optional=True))


def sensor_from_parameters(alg, parameters, context) -> str | None:
    """A sensor name, a CSV path, or None when an optional ``SENSOR`` is unset and no CSV is given.

    A ``SENSOR`` left out of ``parameters`` (a script, ``qgis_process``) takes the parameter's default, as
    Processing does; an optional one given as None (cleared in the dialog) means none, a mandatory one its default.
    """
    definition = alg.parameterDefinition("SENSOR")
    optional = bool(definition.flags() & QgsProcessingParameterDefinition.FlagOptional)
    value = parameters.get("SENSOR", definition.defaultValue())
    if value is None and not parameters.get("SRF_CSV") and (optional or definition.defaultValue() is None):
        return None
    key = SENSORS[alg.parameterAsEnum(parameters, "SENSOR", context)][0]
    csv_path = alg.parameterAsFile(parameters, "SRF_CSV", context)
    if key == "csv" or csv_path:
        if not csv_path:
            raise QgsProcessingException(tr("Custom response CSV chosen but no CSV file given"))
        return csv_path
    return key
