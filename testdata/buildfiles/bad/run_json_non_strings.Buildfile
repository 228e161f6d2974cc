FROM alpine
RUN ["sleep", 10]
