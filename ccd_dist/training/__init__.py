"""Training loops shared by every stage: BPR / VAE passes, evaluation, early stopping."""
from .loop import FitResult, fit

__all__ = ["FitResult", "fit"]
