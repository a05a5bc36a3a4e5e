"""bert4x: Keras 3 Transformer toolkit in the bert4keras tradition."""

from setuptools import find_packages, setup

setup(
    name="bert4x",
    version="0.1.0",
    description="Keras 3 / TensorFlow toolkit for BERT-family models: original checkpoints, "
    "derived optimizers, XLA decoding",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bert4x", "bert4x.*"]) + ["bert4x.pretrained_configs"],
    package_dir={"bert4x.pretrained_configs": "pretrained_configs"},
    package_data={"bert4x.pretrained_configs": ["*.json"]},
    install_requires=[
        "keras>=3.10,<4",
        "tensorflow>=2.18",
        "numpy",
        "h5py",
        "tokenizers>=0.20",
        "safetensors",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "sentencepiece",
            "ruff",
            "cchess",
            "nbclient",
            "nbformat",
            "ipykernel",
            "matplotlib",
        ],
        "docs": ["mkdocs", "mkdocs-material", "mkdocstrings[python]"],
        "jax": ["jax[cpu]"],
    },
)
