"""dt-eval: evaluation harness for audio reasoning language models."""

__version__ = "0.1.0"
