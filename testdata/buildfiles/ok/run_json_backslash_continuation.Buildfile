FROM alpine
RUN ["echo", \
     "multi-line", \
     "json"]
