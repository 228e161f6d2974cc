FROM alpine
COPY ["a", 1, "/b"]
