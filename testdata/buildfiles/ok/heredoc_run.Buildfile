FROM alpine
RUN <<EOF
echo from heredoc
apk add --no-cache curl
EOF
RUN echo after
