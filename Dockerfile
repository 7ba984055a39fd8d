# specserve images. Default target: the operator (`specserve run`).
#   docker build -t specserve .                        operator
#   docker build --target simulator -t specserve-sim .  vLLM-compatible simulator (`vllm serve ...` runs `specserve simulate`)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: install specserve and its runtime dependencies (no test extra) into a virtualenv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/specserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/specserve/bin/pip install .

# Runtime: the virtualenv on a clean base, run as an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 65532 specserve \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin specserve
COPY --from=build /opt/specserve /opt/specserve
ENV PATH=/opt/specserve/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 65532:65532

FROM runtime AS simulator
# Rendered pods run `vllm serve ...` (command and args, like the vllm/vllm-openai image): a `vllm` on PATH
# hands that command line to the simulator, which drops the leading `serve`.
USER root
RUN printf '#!/bin/sh\nexec specserve simulate "$@"\n' > /opt/specserve/bin/vllm && chmod 0755 /opt/specserve/bin/vllm
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["vllm", "serve"]

FROM runtime AS operator
# 8080: Kopf's liveness endpoint /healthz; 8081: the operator's /metrics.
EXPOSE 8080 8081
ENTRYPOINT ["specserve"]
CMD ["run"]
