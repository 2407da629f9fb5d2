# One image for every part of Smart Router: each compose service picks its command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY smart_router smart_router
COPY dashboard dashboard
COPY emulator emulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# compose's nats-auth volume starts as a copy of /run/nats-auth, so the router user owns it.
RUN useradd --create-home --uid 10001 router \
    && mkdir -m 700 /run/nats-auth && chown router:router /run/nats-auth
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER router
ENV LOG_FORMAT=json
CMD ["smart-router", "--help"]
