# One image for every slinfer service (scheduler, memory, consolidator, cpu-worker, http).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# The CPU build of torch (the default index would bring a multi-GB CUDA build).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY slinfer ./slinfer
COPY services ./services
COPY sim ./sim
RUN pip install .
ENV SLINFER_HOME=/data
EXPOSE 50051 50052 50053 50061
CMD ["python", "-m", "slinfer.services.scheduler", "--listen", "0.0.0.0:50051"]
