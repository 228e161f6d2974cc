FROM alpine
WORKDIR   
