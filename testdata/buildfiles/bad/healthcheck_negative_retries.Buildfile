FROM alpine
HEALTHCHECK --retries=-1 CMD true
