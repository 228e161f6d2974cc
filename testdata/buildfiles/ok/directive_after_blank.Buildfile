
# escape=`
FROM alpine
RUN echo \
    still backslash
