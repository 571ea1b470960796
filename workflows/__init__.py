"""Snapflow control plane: policy model, the pipeline definition, Hera workflow builders, CLI, local runner."""

__version__ = "0.1.0"
