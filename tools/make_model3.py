"""Write examples/simulate_superresolve_assess.model3: Simulate -> Super-resolve -> Assess, as a graphical model.

Built with QGIS's own modeler API so the file is exactly what the graphical modeler saves.
Run: ``QT_QPA_PLATFORM=offscreen PYTHONPATH=. .venv/bin/python tools/make_model3.py``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), "/usr/share/qgis/python/plugins"]

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF  # noqa: E402


def build() -> QgsProcessingModelAlgorithm:
    m = QgsProcessingModelAlgorithm("Simulate, super-resolve and assess", "HSR-Diff examples")
    m.setHelpContent({"ALG_DESC": "Simulates an LR-HSI / HR-MSI pair from a reference HR-HSI (Sentinel-2 response), "
                                  "super-resolves it with an HSR-Diff model and scores the result against the reference."})
    inputs = [
        (QgsProcessingParameterRasterLayer("reference", "Reference HR-HSI"), QPointF(120, 60)),
        (QgsProcessingParameterFile("model", "HSR-Diff model (.onnx)", extension="onnx"), QPointF(420, 60)),
        (QgsProcessingParameterNumber("scale", "Scale factor", QgsProcessingParameterNumber.Integer, 4, minValue=2, maxValue=16),
         QPointF(720, 60)),
        (QgsProcessingParameterNumber("steps", "Denoising steps", QgsProcessingParameterNumber.Integer, 10, minValue=1, maxValue=100),
         QPointF(1020, 60)),
    ]
    for param, pos in inputs:
        mp = QgsProcessingModelParameter(param.name())
        mp.setPosition(pos)
        m.addModelParameter(param, mp)

    def child(alg_id: str, cid: str, pos: QPointF, params: dict) -> QgsProcessingModelChildAlgorithm:
        c = QgsProcessingModelChildAlgorithm(alg_id)
        c.setChildId(cid)
        c.setDescription(cid.replace("_", " ").capitalize())
        c.setPosition(pos)
        for k, v in params.items():
            c.addParameterSources(k, [v])
        return c

    P = QgsProcessingModelChildParameterSource  # noqa: N806
    sim = child("hsrdiff:simulate", "simulate", QPointF(200, 220), {
        "HR_HSI": P.fromModelParameter("reference"), "SENSOR": P.fromStaticValue(0), "SCALE": P.fromModelParameter("scale"),
        "SIGMA": P.fromStaticValue(0.0), "SNR": P.fromStaticValue(0.0), "SEED": P.fromStaticValue(0)})
    sr = child("hsrdiff:superresolve", "super_resolve", QPointF(500, 380), {
        "LR_HSI": P.fromChildOutput("simulate", "LR_HSI"), "HR_MSI": P.fromChildOutput("simulate", "HR_MSI"),
        "MODEL": P.fromModelParameter("model"), "SAMPLER": P.fromStaticValue(0), "STEPS": P.fromModelParameter("steps"),
        "SEED": P.fromStaticValue(0), "SAMPLES": P.fromStaticValue(1), "TILE": P.fromStaticValue(256),
        "OVERLAP": P.fromStaticValue(32), "DEVICE": P.fromStaticValue(0), "ETA": P.fromStaticValue(0.0)})
    out = QgsProcessingModelOutput("sharpened", "Super-resolved HR-HSI")
    out.setChildOutputName("OUTPUT")
    out.setChildId("super_resolve")
    sr.setModelOutputs({"sharpened": out})
    asse = child("hsrdiff:assess", "assess", QPointF(800, 540), {
        "REFERENCE": P.fromModelParameter("reference"), "RESULT": P.fromChildOutput("super_resolve", "OUTPUT"),
        "SCALE": P.fromModelParameter("scale"), "BORDER": P.fromStaticValue(0)})
    q = QgsProcessingModelOutput("quality_csv", "Quality table (CSV)")
    q.setChildOutputName("CSV")
    q.setChildId("assess")
    asse.setModelOutputs({"quality_csv": q})
    for c in (sim, sr, asse):
        m.addChildAlgorithm(c)
    return m


def main() -> None:
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from hsr_diff_plugin.provider import HsrDiffProvider

    provider = HsrDiffProvider()  # keep a reference: the registry does not own Python providers
    QgsApplication.processingRegistry().addProvider(provider)
    model = build()
    ok, errors = model.validate()
    if not ok:
        raise SystemExit("model does not validate: " + "; ".join(errors))
    target = ROOT / "examples" / "simulate_superresolve_assess.model3"
    target.parent.mkdir(exist_ok=True)
    if not model.toFile(str(target)):
        raise SystemExit(f"could not write {target}")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
