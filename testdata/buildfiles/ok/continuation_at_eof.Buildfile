FROM alpine
RUN echo unfinished \
