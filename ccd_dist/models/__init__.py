"""Base models behind one interface (see ``base`` for the contract): BPR-MF, LightGCN, Mult-VAE."""
from .base import Recommender
from .bpr import BPRMF
from .factory import KINDS, build_model
from .graph import NormalizedGraph
from .lightgcn import LightGCN
from .vae import MultVAE


def load_model(path, map_location="cpu") -> Recommender:
    """Load any model written by ``Recommender.save``."""
    return Recommender.load(path, map_location=map_location)


__all__ = ["Recommender", "BPRMF", "LightGCN", "MultVAE", "NormalizedGraph", "build_model", "load_model", "KINDS"]
