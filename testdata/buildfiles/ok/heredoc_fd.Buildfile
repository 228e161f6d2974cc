FROM alpine
RUN cat 3<<IN
three
IN
