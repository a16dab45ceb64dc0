# MLflow tracking + registry server for the mlray testbed.
#
# SQLite backend and artifacts both live on the /mlflow volume; `--serve-artifacts` proxies
# artifact up/downloads through the server, so Ray replicas fetch model files over HTTP and
# need no shared filesystem. Any Debian-family Python base works; the testbed passes its Ray
# image (which already holds mlflow) to make this build instant.
#   podman build -f docker/mlflow.Dockerfile -t mlray-mlflow docker/
ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=docker.io/library/python:${PYTHON_VERSION}-slim
FROM ${BASE_IMAGE}

ARG PYTHON_VERSION=3.11
ARG MLFLOW_VERSION=3.17.2
ARG EXTRA_CA_BUNDLE=extra-ca.pem
ARG MLRAY_PIP_INDEX_URL=
ARG MLRAY_PIP_EXTRA_INDEX_URL=
ARG MLRAY_PIP_TRUSTED_HOST=

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    MLFLOW_PORT=5000 \
    MLFLOW_WORKERS=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_SERVER_ALLOWED_HOSTS="localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,172.*,192.168.*"

COPY prepare-base.sh pip-install.sh ${EXTRA_CA_BUNDLE} /tmp/mlray-build/
RUN sh /tmp/mlray-build/prepare-base.sh "${PYTHON_VERSION}" "/tmp/mlray-build/$(basename ${EXTRA_CA_BUNDLE})" \
    && sh /tmp/mlray-build/pip-install.sh "mlflow==${MLFLOW_VERSION}" \
    && rm -rf /tmp/mlray-build \
    && mkdir -p /mlflow/artifacts

VOLUME /mlflow
EXPOSE 5000
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: the testbed needs no async jobs, and their huey
# consumers (a dozen processes) starve small hosts.
# MLFLOW_SERVER_ALLOWED_HOSTS: MLflow 3 rejects Host headers it does not know (DNS-rebinding
# guard); the testbed adds the container's network name at run time.
ENTRYPOINT ["tini", "--"]
CMD ["sh", "-c", "exec mlflow server --host 0.0.0.0 --port \"$MLFLOW_PORT\" --workers \"$MLFLOW_WORKERS\" --backend-store-uri sqlite:////mlflow/mlflow.db --serve-artifacts --artifacts-destination /mlflow/artifacts"]
