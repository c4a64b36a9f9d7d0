# vbun: one static binary on a CUDA runtime image.
#   docker build -t vbun .
#   docker run --gpus all -p 8000:8000 -v ~/models/Qwen3-0.6B:/model:ro -v vbun-cache:/home/vbun/.cache vbun /model
# (the cache volume keeps downloaded models and the compiled kernels between containers: no JIT on restart)
# The NVIDIA container toolkit mounts the host driver (libcuda); cuBLAS and NCCL come from the base image.

ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json bunfig.toml ./
COPY src ./src
COPY ptx ./ptx
RUN npx bun run build

FROM ${CUDA_RUNTIME_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 vbun
COPY --from=build /src/dist/vbun /usr/local/bin/vbun
USER vbun
# Listen on all interfaces inside the container (the CLI default is 127.0.0.1).
ENV VBUN_HOST=0.0.0.0 VBUN_PORT=8000 VBUN_CACHE=/home/vbun/.cache/vbun HF_HOME=/home/vbun/.cache/huggingface
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["vbun", "serve"]
