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
    "importlib_resources==7.1.0",  # tfds needs it on Python 3.11 but does not declare it.
    "etils[epath]==1.15.0",  # paths that may be gs:// URLs (workdir lock, checkpoints)
    "absl-py",
    "numpy",
    "pillow",
    "safetensors",
    "scikit-image",  # real photos for the bundled offline dataset
    "scikit-learn",
]

EXTRAS_REQUIRE = {
    # PyTorch consumers of the exported weights; torch==2.13.0 must be installed first (CPU wheel),
    # and timm goes in with --no-deps (the Makefile does both).
    "test": ["pytest", "torch==2.13.0", "transformers"],
}

setuptools.setup(
    name="mimjax",
    version="0.1.0",
    description="Masked image modeling (MAE, LUT) pre-training of vision transformers in JAX/Flax",
    packages=setuptools.find_packages(include=["mimjax", "mimjax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": [
        "mimjax-train = mimjax.main:main",
        "mimjax-export = mimjax.export.cli:main",
    ]},
)
