# jobctl worker image: `docker compose build jobctl-worker` (see docker-compose.yml) or
#   docker build -t jobctl-worker:0.1.0 .
# Configuration comes from the environment at run time (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
# JOBCTL_TASK_QUEUE, JOBCTL_TARGETS, ...), so one image serves every environment.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Same uid/gid (9999) as the `flink` user of the official Flink image, so the worker and the Flink cluster
# can share the checkpoint/savepoint/jar volume without world-writable permissions.
RUN groupadd --system --gid 9999 jobctl \
 && useradd --system --uid 9999 --gid jobctl --create-home --home-dir /home/jobctl jobctl

WORKDIR /src
# Only what `pip install .` needs: the project metadata (README is pyproject's `readme`, copied if present)
# and the top-level packages of [tool.setuptools.packages.find] include. Keep this list in sync with
# pyproject.toml (tests/test_compose.py checks it).
COPY pyproject.toml README* ./
COPY jobctl/ jobctl/
COPY workflows/ workflows/
COPY activities/ activities/
COPY worker/ worker/
RUN pip install --no-cache-dir . \
 && rm -rf /src

WORKDIR /home/jobctl
USER jobctl

# Workers are stateless: run as many replicas as you like against the same task queue.
CMD ["jobctl", "worker"]
