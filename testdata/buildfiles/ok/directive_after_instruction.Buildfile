FROM alpine
# escape=`
RUN echo \
    just a comment above
