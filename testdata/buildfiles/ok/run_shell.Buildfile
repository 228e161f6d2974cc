FROM alpine
RUN echo hello world
RUN   set -eux;   echo "padded"   
