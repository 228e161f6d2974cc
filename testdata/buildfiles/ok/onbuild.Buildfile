FROM alpine
ONBUILD RUN echo triggered
ONBUILD COPY --chown=1:1 . /app
ONBUILD ENV X=1
onbuild healthcheck CMD true
