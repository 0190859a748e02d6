"""mimjax: masked image modeling (MAE, LUT) pre-training in JAX/Flax."""
import setuptools

# The pinned install set: these versions are tested together.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    "gcsfs==2026.10.1",  # gs:// paths through etils.epath (TensorFlow's client is not used)
    "importlib_resources==7.1.0",  # tfds needs it on Python 3.11 but does not declare it.
    "etils[epath]==1.15.0",  # paths that may be gs:// URLs (workdir lock, checkpoints)
    "absl-py",
    "numpy",
    "pillow",
    "safetensors",
    "scikit-image",  # real photos for the bundled offline dataset
    "scikit-learn",
    "matplotlib==3.11.2",  # sweep reports and mimjax-analyze's figures (Agg backend)
]

EXTRAS_REQUIRE = {
    # PyTorch consumers of the exported weights; torch==2.13.0 must be installed first (CPU wheel),
    # and timm goes in with --no-deps (the Makefile does both).
    "test": ["pytest", "pytest-xdist==3.8.0", "torch==2.13.0", "transformers",
             "gcp-storage-emulator==2026.7.19"],  # a local Cloud Storage for the gs:// tests
    # libtpu at jax's pin: runs on TPU VMs, and lets mimjax-compile compile for TPU slices anywhere.
    "tpu": ["jax[tpu]==0.10.2"],
    # CUDA 12 wheels of the GPU plugin at jax's version (with the CUDA libraries from PyPI).
    "cuda": ["jax[cuda12]==0.10.2"],
}

setuptools.setup(
    name="mimjax",
    version="0.1.0",
    description="Masked image modeling (MAE, LUT) pre-training of vision transformers in JAX/Flax",
    # configs/ too: a config file loaded by path (--config /any/dir/configs/lut.py) imports
    # what it builds on (`from configs import common`) from any working directory.
    packages=setuptools.find_packages(include=["mimjax", "mimjax.*", "configs"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": [
        "mimjax-train = mimjax.main:main",
        "mimjax-export = mimjax.export.cli:main",
        "mimjax-sweep = mimjax.sweeps.cli:main",
        "mimjax-compile = mimjax.compile:main",
        "mimjax-eval = mimjax.evals.cli:main",
        "mimjax-analyze = mimjax.evals.analysis_cli:main",
    ]},
)
