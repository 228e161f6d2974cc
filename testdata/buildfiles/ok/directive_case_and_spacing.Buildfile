#   SYNTAX   =   docker/dockerfile:1
# Escape = `
# check=skip=JSONArgsRecommended;error=true
FROM alpine
RUN echo `
    continued
