FROM alpine
SHELL ["/bin/sh", "-c"] # trailing text
