FROM alpine
RUN [echo, not json]
RUN ["echo", 'single']
RUN ["unterminated"
RUN ["ok"] and more
