FROM alpine
RUN --security=paranoid true
