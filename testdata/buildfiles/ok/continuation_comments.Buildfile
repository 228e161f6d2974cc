FROM alpine
RUN apk add --no-cache \
# a comment line inside the continuation
    bash \
    # an indented comment
    curl \

    jq
RUN echo done
