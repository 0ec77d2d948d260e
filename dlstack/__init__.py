"""dlstack: the deep-learning host stack, as code (controller-side Python package)."""

__version__ = "0.1.0"
