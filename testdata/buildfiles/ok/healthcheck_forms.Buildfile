FROM alpine
HEALTHCHECK NONE
HEALTHCHECK CMD curl -f http://localhost/ || exit 1
HEALTHCHECK --interval=30s --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 \
  CMD ["curl", "-f", "http://localhost/"]
HEALTHCHECK --interval=0 --retries=0 CMD true
healthcheck none
