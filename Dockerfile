# One image for `callqueue up` (default), `callqueue api` and `callqueue worker`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /install /usr/local
USER app
WORKDIR /home/app
ENV HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# SIGTERM: stop claiming, finish dials in flight, exit within 10 s (Cloud Run's grace period).
STOPSIGNAL SIGTERM
CMD ["callqueue", "up"]
