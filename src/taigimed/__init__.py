"""TaigiMed: a Kubernetes-native MLOps platform for a Taiwanese Hokkien (Taigi) medical advisor."""

__version__ = "0.1.0"
