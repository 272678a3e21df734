# Serving image: the official TensorFlow Serving image holding an exported model.
#
#   nvan-export --model ste_nvan.keras --out models/nvan/1
#   docker build -f docker/serving.Dockerfile -t nvan-tf-serving --build-arg MODEL_DIR=models/nvan .
#   docker run --rm -p 8501:8501 -p 8500:8500 nvan-tf-serving
#
# MODEL_DIR is the model base folder: numbered version folders (1/, 2/, ...) inside, each a
# SavedModel from nvan-export; TF Serving serves the highest. SERVING_TAG: e.g. latest-gpu.
ARG SERVING_TAG=latest
FROM tensorflow/serving:${SERVING_TAG}

ARG MODEL_DIR=models/nvan
ARG MODEL_NAME=nvan
ENV MODEL_NAME=${MODEL_NAME} MODEL_BASE_PATH=/models
COPY ${MODEL_DIR} /models/${MODEL_NAME}
# The image's entrypoint serves /models/${MODEL_NAME}: REST on 8501, gRPC on 8500.
EXPOSE 8500 8501
