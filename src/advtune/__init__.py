"""advtune: adversarial fine-tuning of Transformer text classifiers (FreeLB, TAT, CAT, PEAFT, ...)."""

__version__ = "0.1.0"
