# syntax=docker/dockerfile:1
# One image for the service (`jobscheduler serve`) and the timer workload (`jobscheduler-timer`):
# TIMER_IMAGE can point at it. Build:
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse HEAD) --build-arg BUILD_DATE=$(date -u +%FT%TZ) -t jobscheduler .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VERSION=unknown
ARG COMMIT=unknown
ARG DIRTY=false
ARG BUILD_DATE=unknown
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hack/buildinfo.sh hack/buildinfo.sh
COPY jobscheduler ./jobscheduler
# Build info is embedded into the package: the image has no .git to ask at run time.
# kubernetes/aio is the client's asyncio twin (68 MB of source); the service is synchronous and
# never imports it (tests/realnode/test_image.py checks both).
RUN VERSION="${VERSION}" COMMIT="${COMMIT}" DIRTY="${DIRTY}" BUILD_DATE="${BUILD_DATE}" \
      bash hack/buildinfo.sh \
 && python -m venv /opt/jobscheduler \
 && /opt/jobscheduler/bin/pip install --no-compile . \
 && rm -r /opt/jobscheduler/lib/python3*/site-packages/kubernetes/aio \
 && /opt/jobscheduler/bin/python -m compileall -q /opt/jobscheduler/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="jobscheduler" \
      org.opencontainers.image.description="gRPC service that launches Kubernetes Jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/jobscheduler /opt/jobscheduler
ENV PATH=/opt/jobscheduler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, non-root: PodSecurity `restricted` and runAsNonRoot need a number to check.
# The root filesystem is mounted read-only; /tmp is an emptyDir in the manifests.
USER 10001:10001
WORKDIR /tmp
EXPOSE 50054 8080
ENTRYPOINT ["jobscheduler"]
CMD ["serve"]
