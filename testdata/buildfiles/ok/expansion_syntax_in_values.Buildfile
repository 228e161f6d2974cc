ARG VERSION=1.2.3
FROM alpine:${VERSION%.*}
ENV MAJOR=${VERSION%%.*} PATCH=${VERSION##*.} DEF=${UNSET:-fallback} ALT=${VERSION:+set}
WORKDIR /opt/${NAME:-app}
COPY ${SRC:-.} /dst/
