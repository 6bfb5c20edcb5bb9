# Railway (or any container host) image: Debian bookworm, the release binary, and the
# project's Python environment with the pinned hyperon, laid out as in a checkout so the
# default PYTHON (.venv/bin/python) and start command work unchanged.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv libpython3.11-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN scripts/setup.sh

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv libpython3.11 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt ./
RUN python3.11 -m venv .venv && .venv/bin/pip install --no-cache-dir -r requirements.txt
COPY --from=build /app/target/release/metta-learner-backend target/release/metta-learner-backend
# The database lives on the volume mounted at /data.
ENV HOST=0.0.0.0 \
    DATABASE_URL=sqlite:///data/metta-learner.db
EXPOSE 5000
CMD ["target/release/metta-learner-backend"]
