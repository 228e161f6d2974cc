FROM alpine
RUN <<EOF
FROM not-an-instruction
RUN neither \
EOF
CMD ["true"]
