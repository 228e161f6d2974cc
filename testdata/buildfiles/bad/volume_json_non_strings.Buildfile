FROM alpine
VOLUME [1]
