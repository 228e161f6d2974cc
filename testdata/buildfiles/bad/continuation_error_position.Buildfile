FROM alpine
RUN echo a \
    b
COPY \
  --bogus=1 a b
