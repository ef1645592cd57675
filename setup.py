"""hrnet-hand: HRNet-W18 hand keypoints and a fair optimizer comparison."""
from setuptools import find_packages, setup

setup(
    name="hrnet-hand",
    version="0.1.0",
    description="HRNet-W18 21-keypoint hand heatmaps and a trustworthy SGD/Adam/RMSprop/Lookahead comparison",
    python_requires=">=3.9",
    packages=find_packages(include=["configs", "hrnet", "hrnet.*", "data", "data.*", "optim", "optim.*"]),
    install_requires=[
        # Admit the releases on this machine's disk (torch 2.14.1 / torchvision 0.29.1) and older ones.
        "torch>=2.1,<=2.14.1",
        "torchvision>=0.16,<=0.29.1",
        "timm>=0.9.16",
        "albumentations>=1.4",
        "opencv-python-headless>=4.8",
        "tensorboard>=2.14",
        "yacs>=0.1.8",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "scipy>=1.10",  # Student t quantiles of the study statistics (hrnet/study/analyse/stats.py)
    ],
    extras_require={
        # tools/export.py --format onnx, tools/demo.py --backend onnxruntime, benchmark.py infer
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        # tools/study.py --executor ray (a study's runs on a Ray cluster); 2.60 is the release tested
        "cluster": ["ray>=2.60"],
        # CI runs the export and Ray executor tests too, so the test extra includes those extras
        "test": ["pytest>=7.4", "pytest-timeout>=2.1", "onnx>=1.14", "onnxruntime>=1.16", "hypothesis>=6.0",
                 "ray>=2.60",
                 "mutmut>=3.8,<4"],  # tools/mutation.py (mutation testing, not run in CI); it uses mutmut 3's config
    },
)
