"""The provider's algorithms. Each module holds one algorithm; list new ones here."""


def algorithm_classes() -> list:
    from .assess import AssessAlgorithm
    from .check_dependencies import CheckDependenciesAlgorithm
    from .classical import ClassicalFusionAlgorithm
    from .estimate import EstimateSensorAlgorithm
    from .prepare import PreparePairAlgorithm
    from .simulate import SimulateAlgorithm
    from .superresolve import SuperResolveAlgorithm
    from .train import TrainAlgorithm

    return [SuperResolveAlgorithm, TrainAlgorithm, ClassicalFusionAlgorithm, SimulateAlgorithm, EstimateSensorAlgorithm, AssessAlgorithm,
            CheckDependenciesAlgorithm, PreparePairAlgorithm]
