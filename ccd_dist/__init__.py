"""ccd-dist: Continual Collaborative Distillation for recommender systems."""

__version__ = "0.1.0"
