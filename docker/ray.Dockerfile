# Ray node image for the mlray testbed: ray[serve] + mlflow, and no mlray (the serving code
# travels with each deploy as a runtime_env py_module).
#
# Works with a registry base (default: the official python:X.Y-slim) and with an offline base
# made by debootstrap + `podman import` (Debian's python3). The testbed passes all build args;
# a plain build needs none:
#   podman build -f docker/ray.Dockerfile -t mlray-ray:py3.11 docker/
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=docker.io/library/python:${PYTHON_VERSION}-slim
FROM ${BASE_IMAGE}

ARG PYTHON_VERSION=3.11
ARG RAY_VERSION=2.60.0
ARG MLFLOW_VERSION=3.17.2
# A file in the build context holding extra PEM certificates (e.g. a TLS proxy's CA); an empty
# file means "none".
ARG EXTRA_CA_BUNDLE=extra-ca.pem
# Package index overrides for the build (the testbed passes them to running containers too).
ARG MLRAY_PIP_INDEX_URL=
ARG MLRAY_PIP_EXTRA_INDEX_URL=
ARG MLRAY_PIP_TRUSTED_HOST=

# Requests and pip bundle their own CAs; point them all at the system store (which holds the
# extra CA after prepare-base.sh).
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0

COPY prepare-base.sh pip-install.sh ${EXTRA_CA_BUNDLE} /tmp/mlray-build/
RUN sh /tmp/mlray-build/prepare-base.sh "${PYTHON_VERSION}" "/tmp/mlray-build/$(basename ${EXTRA_CA_BUNDLE})" \
    && install -m 0755 /tmp/mlray-build/pip-install.sh /usr/local/bin/mlray-pip-install \
    && rm -rf /tmp/mlray-build

# virtualenv: Ray's runtime_env pip plugin needs it to create per-model environments.
RUN mlray-pip-install \
        "ray[serve]==${RAY_VERSION}" \
        "mlflow==${MLFLOW_VERSION}" \
        virtualenv \
    && python3 -c "import ray, mlflow, virtualenv; print('ray', ray.__version__, 'mlflow', mlflow.__version__)"

# Ray job entrypoints conventionally say `python`; Debian only ships `python3`.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python

WORKDIR /tmp
# tini forwards SIGTERM to `ray start --block`, so `podman stop` is fast and clean.
ENTRYPOINT ["tini", "--"]
CMD ["ray", "start", "--head", "--block", "--dashboard-host=0.0.0.0", "--disable-usage-stats"]
