FROM alpine
CMD --1 x
