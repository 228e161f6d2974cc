FROM alpine
RUN \
  echo split after keyword
ENV \
  A=1 \
  B=2
