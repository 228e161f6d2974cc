FROM alpine
RUN --mounts=type=cache,target=/x true
