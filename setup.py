"""fairseq-srupp: the SRU++ language model (Lei 2021) as a fairseq plugin.

Nothing is compiled at install time: the CUDA kernel is compiled by CuPy (NVRTC) and the fused
CPU recurrence by torch.utils.cpp_extension, each on first use.
"""
from setuptools import find_packages, setup

# srupp-export: torch.onnx's exporter needs onnx and onnxscript; the tests run the export with
# onnxruntime
EXPORT = ["onnx", "onnxscript", "onnxruntime"]

setup(
    name="fairseq-srupp",
    version="0.1.0",
    description="SRU++ language models (Lei 2021) as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # srupp_runtime serves exported models with numpy and onnxruntime only; on a serving machine
    # without torch: pip install --no-deps fairseq-srupp && pip install numpy onnxruntime
    packages=find_packages(include=["fairseq_srupp", "fairseq_srupp.*", "srupp_runtime"]),
    package_data={"fairseq_srupp": ["cuda/*.cu", "modules/csrc/*.cpp"]},
    install_requires=[
        # any torch build: the user's CPU or CUDA build is kept (scripts/setup_env.sh installs
        # torch==2.13.0 only where none is importable)
        "torch",
        "fairseq; python_version < '3.11'",
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "sacremoses",
        "subword-nmt",
        "ninja",
    ],
    extras_require={
        "cuda": ["cupy-cuda12x"],
        "export": EXPORT,
        "test": ["pytest", "matplotlib", *EXPORT],
    },
    entry_points={
        "console_scripts": [
            "srupp-convert-checkpoint = fairseq_srupp.conversion.cli:main",
            "srupp-export = fairseq_srupp.export.cli:main",
            "srupp-prepare-text = fairseq_srupp.tools.prepare_text:cli_main",
            "srupp-sample = fairseq_srupp.tools.sample_text:cli_main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
