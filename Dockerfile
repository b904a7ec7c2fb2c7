# SageMaker multi-model (MME) inference container for PyTorch models.
#
#   docker build -t mme .                       # CPU build of torch (the default)
#   docker run --rm -p 8080:8080 -v "$PWD/models:/opt/ml/models" mme serve
#   `mme serve` raises its soft limits to the hard ones itself; for thousands of models raise
#   the hard ones: docker run --ulimit nofile=1048576:1048576 ... (README: Many small models)
#
# Build arguments:
#   BASE_IMAGE       a Debian bookworm image (CI passes one made with debootstrap)
#   TORCH_INDEX_URL  extra pip index for torch/torchvision; empty = PyPI only (CUDA build)
#   PIP_CERT, PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL
#                    pip settings for the build only (CI: TLS proxy CA, local wheel folders)
#   MME_UID          uid of the optional non-root user `mme`
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------- python: Debian's python3 (3.11)
FROM ${BASE_IMAGE} AS python
# Debian package versions are not pinned: bookworm only moves for security fixes, and
# superseded versions leave the mirror. (openjdk's postinst links man pages into man1.)
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------- requirements: pyproject's pins
# Only pyproject.toml goes in, so the dependency layer below is rebuilt only when pins change.
FROM python AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; \
deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; \
print(*deps, sep='\n')" > /requirements.txt

# ---------------------------------------------------------------- wheel: our package
FROM python AS wheel
ARG PIP_CERT=""
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
COPY . /src
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------- runtime
FROM python
ARG PIP_CERT=""
ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG MME_UID=1000

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="sagemaker-mme-pytorch" \
      org.opencontainers.image.description="SageMaker multi-model inference container for PyTorch"

# SageMaker reaches the server from outside the container: every interface (natively,
# `mme serve` listens on loopback only).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MME_BIND_ADDRESS=0.0.0.0 \
    PATH=/opt/mme/venv/bin:${PATH}

# A headless Java 17 for MMS's frontend.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && java -version

# Dependencies first, at the versions pinned in pyproject.toml (the only place for pins)...
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# hadolint ignore=DL3013
RUN python3 -m venv /opt/mme/venv \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
        --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# ...then our wheel: its pinned requirements are met already, so only the package goes in.
COPY --from=wheel /wheels /tmp/wheels
# hadolint ignore=DL3013
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && pip check \
    && mme --version \
    && python -c "import torch, torchvision, sagemaker_inference, mme.server"

# SageMaker runs the container as root (see README, "Container image"); the `mme` user lets the
# image also run non-root elsewhere: docker run --user mme ... It can read and write /opt/ml.
RUN useradd --uid "${MME_UID}" --user-group --create-home --shell /usr/sbin/nologin mme \
    && mkdir -p /opt/ml/models \
    && chown -R mme:mme /opt/ml

COPY docker/entrypoint.py /opt/mme/entrypoint.py

WORKDIR /opt/ml
EXPOSE 8080
# hadolint ignore=DL3002
USER 0
ENTRYPOINT ["/opt/mme/venv/bin/python", "/opt/mme/entrypoint.py"]
CMD ["serve"]
