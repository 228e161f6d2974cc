FROM alpine
RUN <<ONE cat && <<TWO cat
1
ONE
2
