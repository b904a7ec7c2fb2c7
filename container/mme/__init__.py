"""SageMaker multi-model container for PyTorch: serving core, packaging and local tools."""

__version__ = "0.1.0"
