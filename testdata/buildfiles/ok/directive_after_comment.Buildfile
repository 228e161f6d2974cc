# just a comment
# escape=`
FROM alpine
RUN echo backslash still continues \
    here
