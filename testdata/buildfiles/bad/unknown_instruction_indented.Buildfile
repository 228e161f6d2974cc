FROM alpine
  FETCH http://x
