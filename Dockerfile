# Image for web and workers. On PyPI, torch==2.13.0 for Linux x86_64 is the CUDA build,
# so the same image runs on GPU workers (CUDA picked automatically) and on CPU.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dicomio dicomio
COPY radiology radiology
COPY inference inference
COPY training training
COPY bench bench
RUN pip install --no-cache-dir . gunicorn
COPY manage.py ./
COPY models models
RUN useradd --system --uid 1000 app && mkdir -p /data/media && chown app /data/media
USER app
EXPOSE 8000
