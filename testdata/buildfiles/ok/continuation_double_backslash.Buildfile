FROM alpine
RUN echo two backslashes end the instruction \\
RUN echo so this line is an instruction of its own
ENV ODD=three\\\
LABEL not=joined
RUN echo one backslash continues \
    onto this line
