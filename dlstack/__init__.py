"""dlstack: the deep-learning host stack, as code (controller-side Python package)."""

# The one place the version is written: pyproject.toml reads it from here, `dlstack --version` prints it.
__version__ = "0.1.0"
