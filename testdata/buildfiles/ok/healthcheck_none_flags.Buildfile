FROM alpine
HEALTHCHECK --interval=5s NONE
HEALTHCHECK --bogus --retries=x NONE
HEALTHCHECK -- none
