"""Packaging for ccd-dist.

`kernels/` is a top-level folder in the repository but installs as
`ccd_dist.kernels`, so no generic `kernels` module leaks into site-packages.
"""
from setuptools import setup

PACKAGES = [
    "ccd_dist",
    "ccd_dist.data",
    "ccd_dist.ranking",
    "ccd_dist.eval",
    "ccd_dist.models",
    "ccd_dist.ccd",
    "ccd_dist.pipeline",
    "ccd_dist.distributed",
    "ccd_dist.baselines",
    "ccd_dist.kernels",
    "ccd_dist.training",
]

setup(
    name="ccd-dist",
    version="0.1.0",
    description="Continual Collaborative Distillation (CCD, KDD 2024) for recommender systems",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"ccd_dist": "ccd_dist", "ccd_dist.kernels": "kernels"},
    install_requires=[
        "torch==2.13.0",
        "ray[default,train,tune]>=2.40",
        "numba>=0.60",
        "numpy<2.6",
        "scipy>=1.10",
        "faiss-cpu>=1.8",
        "pyarrow>=14",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "psutil>=5.9",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "pytrec-eval-terrier>=0.5",
        ],
    },
    entry_points={"console_scripts": ["ccd-dist=ccd_dist.cli:main"]},
)
