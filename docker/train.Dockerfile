# Training image: the official TensorFlow GPU image with nvan-tf installed; runs nvan-train.
#
#   docker build -f docker/train.Dockerfile -t nvan-tf-train .
#   docker run --rm --gpus all -v "$PWD/data:/data" -v "$PWD/runs:/workspace" nvan-tf-train --help
#
# Without the official tag (it is published a little after each TensorFlow release), build on
# NVIDIA's CUDA image and install tensorflow[and-cuda] instead:
#   docker build -f docker/train.Dockerfile -t nvan-tf-train \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TENSORFLOW=and-cuda .
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# "and-cuda": the base image has no TensorFlow; install Python and tensorflow[and-cuda] in a venv.
ARG TENSORFLOW=
# Optional extras of nvan-tf: torch reads PyTorch checkpoints (ImageNet starts, the authors' models).
ARG EXTRAS=torch

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN if [ "$TENSORFLOW" = "and-cuda" ]; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/* \
        && python3 -m venv /opt/venv \
        && /opt/venv/bin/pip install "tensorflow[and-cuda]==2.21.0"; \
    fi
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /opt/nvan-tf
COPY setup.py setup.cfg README.md ./
COPY *.py ./
COPY nvan_tf ./nvan_tf
RUN python3 -m pip install ".[${EXTRAS}]" && nvan-train --help > /dev/null

WORKDIR /workspace
ENTRYPOINT ["nvan-train"]
CMD ["--help"]
