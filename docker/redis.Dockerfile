# Redis for the testbed's optional GCS fault tolerance (`gcs_ft: redis` in testbed.yml): Ray's
# heads keep their cluster state there, so a restarted head finds its actors, nodes and Serve
# apps again. Debian's redis-server package, on the first Python's Ray image (it already
# trusts the build's CA, so apt works behind a TLS-intercepting proxy).
#   podman build -f docker/redis.Dockerfile --build-arg BASE_IMAGE=localhost/mlray-ray:py3.11 \
#       -t mlray-redis docker/
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && redis-server --version

EXPOSE 6379
# In memory only: the testbed restarts heads, not Redis (a production GCS wants HA Redis).
# No password and no published port: only the testbed's network reaches it.
ENTRYPOINT []
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
