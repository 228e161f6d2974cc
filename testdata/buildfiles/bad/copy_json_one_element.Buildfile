FROM alpine
COPY ["only"]
