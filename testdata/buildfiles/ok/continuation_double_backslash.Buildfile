FROM alpine
RUN echo keep one backslash \\
    next line joined
