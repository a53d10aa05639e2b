# One image for producer, worker and trainer. CPU by default; the torch wheels pinned in
# pyproject.toml carry CUDA, so the same image runs on GPUs with the NVIDIA container runtime.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 INKQ_COMPILE_CACHE_DIR=/cache/compile INKQ_DATA_ROOT=/data/mnist
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY recognizer recognizer
COPY storage storage
COPY producer producer
COPY worker worker
COPY trainer trainer
# bench.synth: the MNIST reader the trainer uses and the generated data `producer demo` submits.
COPY bench bench
# With Flower (the compose file's monitor) and the HTTP API and review desk (`producer serve`).
RUN pip install '.[flower,web]'
CMD ["celery", "-A", "worker", "worker"]
