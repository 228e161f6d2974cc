FROM alpine
RUN ["/bin/sh", "-c", "echo exec form"]
RUN [ "echo" , "spaces" ]
RUN []
