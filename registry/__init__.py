"""taskvec registry: which T5 checkpoints exist and which are compatible with a base model."""

__version__ = "0.1.0"
