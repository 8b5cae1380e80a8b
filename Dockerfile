# syntax=docker/dockerfile:1
# ip-masq-agent image: a Debian slim base with python3 and both iptables backends.
#
# Build:   buildah bud -t ip-masq-agent .        (or: docker build -t ip-masq-agent .)
# Run:     it needs only CAP_NET_ADMIN and CAP_NET_RAW, in the node's network namespace
#          (hostNetwork: true); see examples/ip-masq-agent.yaml.
# Base:    --build-arg BASE_IMAGE=... picks another Debian bookworm-compatible image (CI uses
#          one made locally with debootstrap).
# Proxies: behind a TLS-intercepting proxy, pass its CA bundle as an optional build secret:
#          --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=debian:bookworm-slim

# --- builder: a self-contained virtualenv at /opt/venv -------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
# Only what the package needs (see .dockerignore), so edits elsewhere keep this layer cached.
COPY pyproject.toml README.md /src/
COPY masq /src/masq
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/venv/bin/pip install /src \
 && /opt/venv/bin/pip uninstall -y pip setuptools \
 && /opt/venv/bin/ip-masq-agent --help >/dev/null

# --- final: python3, iptables (legacy and nft), ip6tables, nft, the agent -------------------
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# The iptables package ships both backends (iptables-legacy*, iptables-nft*) and ip6tables;
# nftables provides `nft`, used to detect which backend already holds rules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 iptables nftables \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
           /usr/share/doc /usr/share/man /usr/share/info
COPY --from=builder /opt/venv /opt/venv
# The root filesystem is mounted read-only in the DaemonSet: bytecode is compiled at build time.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Runs as root with every capability dropped but NET_ADMIN and NET_RAW (the DaemonSet drops
# the rest); a non-root user would not get those capabilities without ambient-capability tricks.
USER 0
EXPOSE 9931
ENTRYPOINT ["/opt/venv/bin/ip-masq-agent"]
