FROM alpine
HEALTHCHECK --interval=5s NONE
