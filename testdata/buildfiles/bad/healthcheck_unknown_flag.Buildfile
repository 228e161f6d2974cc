FROM alpine
HEALTHCHECK --every=5s CMD true
