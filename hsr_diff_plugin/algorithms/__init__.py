"""The provider's algorithms. Each module holds one algorithm; list new ones here."""


def algorithm_classes() -> list:
    from .check_dependencies import CheckDependenciesAlgorithm

    return [CheckDependenciesAlgorithm]
