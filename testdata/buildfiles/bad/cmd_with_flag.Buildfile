FROM alpine
CMD --verbose=1 echo
