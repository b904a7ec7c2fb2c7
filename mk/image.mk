# Container image targets. The main Makefile includes this file.
#
#   make build                      docker build -t $(IMAGE) .
#   make run MODELS_DIR=./models    serve the models in MODELS_DIR on http://127.0.0.1:8080
#   make test-image                 CI: build mme:test with podman, run tests/container on it
#   make hadolint                   lint the Dockerfile
#
# Users run docker; CI runs podman with its flags, for example
#   make build CONTAINER_ENGINE=podman \
#     ENGINE_FLAGS="--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=8192:8192" \
#     BUILD_FLAGS="--network host --build-arg BASE_IMAGE=localhost/debian:bookworm-slim"

CONTAINER_ENGINE ?= docker
ENGINE_FLAGS ?=
BUILD_FLAGS ?=
RUN_FLAGS ?=
IMAGE ?= sagemaker-mme-pytorch:latest
TEST_IMAGE ?= mme:test
MODELS_DIR ?= ./models
PORT ?= 8080
VENV ?= .venv

.PHONY: build run test-image hadolint

build:
	$(CONTAINER_ENGINE) build $(ENGINE_FLAGS) $(BUILD_FLAGS) -t $(IMAGE) .

run:
	mkdir -p $(MODELS_DIR)
	$(CONTAINER_ENGINE) run --rm $(ENGINE_FLAGS) $(RUN_FLAGS) -p $(PORT):8080 \
		-v $(abspath $(MODELS_DIR)):/opt/ml/models $(IMAGE) serve

test-image:
	MME_TEST_IMAGE=$(TEST_IMAGE) scripts/ci_image.sh
	MME_TEST_IMAGE=$(TEST_IMAGE) $(VENV)/bin/pytest tests/container --target image

hadolint:
	$(VENV)/bin/hadolint Dockerfile
