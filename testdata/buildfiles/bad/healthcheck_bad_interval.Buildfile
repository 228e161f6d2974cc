FROM alpine
HEALTHCHECK --interval=30 CMD true
