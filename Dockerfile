# One image for central and for sites: `fip central ...` or `fip site ...`.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY federation federation
COPY algorithms algorithms
COPY portal_central portal_central
COPY portal_site portal_site
COPY portal_common portal_common
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 fip \
    && mkdir -p /data && chown fip /data
USER fip
VOLUME ["/data"]

FROM base AS central
ENV FIP_CENTRAL_DATA_DIR=/data FIP_CENTRAL_HOST=0.0.0.0 FIP_CENTRAL_PORT=8443
EXPOSE 8443
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s \
    CMD python -c "import ssl, urllib.request as u; u.urlopen('https://127.0.0.1:8443/health', context=ssl._create_unverified_context(), timeout=4)"
CMD ["fip", "central"]

FROM base AS site
ENV FIP_SITE_DATA_DIR=/data FIP_SITE_HOST=0.0.0.0 FIP_SITE_PORT=8001
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8001/health', timeout=4)"
CMD ["fip", "site"]
