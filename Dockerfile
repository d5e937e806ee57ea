# Kinetic webhooks: one image for every process (gunicorn, celery worker, celery beat, migrate).
# docker-compose.yml shows how they are wired together.

# --- builder: the pinned runtime dependencies, in a virtualenv the final stage copies whole ---
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
# Only the lock file, so editing the code does not invalidate this layer.
COPY requirements/base.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --require-virtualenv -r /tmp/requirements.txt

# --- runtime: the same base image (the venv's python links into it), the venv and the code ---
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production

# A fixed, numeric uid so orchestrators can verify "runAsNonRoot". The home directory is where
# gunicorn puts its control socket; the code itself stays root-owned and read-only to the app.
RUN groupadd --system --gid 10001 kinetic \
    && useradd --system --uid 10001 --gid kinetic --create-home --home-dir /home/kinetic \
        --shell /usr/sbin/nologin kinetic

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY . .

# Production settings refuse to load without these; the values below exist for this step only
# (collectstatic connects to nothing and reads no secret) and are not in the image at runtime.
RUN DATABASE_URL=postgres://build.invalid/unused \
    CELERY_BROKER_URL=redis://build.invalid:6379/0 \
    SECRET_KEY=build-time-only-throwaway-secret-key-never-used-at-runtime-0123456789 \
    ALLOWED_HOSTS=build.invalid \
    SIGNING_SECRET_ENCRYPTION_KEYS=YnVpbGQtdGltZS1vbmx5LW5vdC1hLXJlYWwta2V5ISE= \
    python manage.py collectstatic --noinput

# Where each process writes its metrics (PROMETHEUS_MULTIPROC_DIR in docker-compose.yml): made
# here, the app's own, because every process writes there as soon as Django loads, and only web
# and worker mount the shared volume over it; migrate and beat would otherwise die at start.
RUN install -d -o 10001 -g 10001 /run/metrics

USER 10001:10001

EXPOSE 8000

CMD ["gunicorn", "--config", "/app/gunicorn.conf.py", "config.wsgi"]
