FROM alpine
RUNecho hi
