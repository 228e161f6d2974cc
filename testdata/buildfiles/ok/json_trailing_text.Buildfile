FROM alpine
ENTRYPOINT ["x"] # a trailing comment makes this shell form
CMD ["a", "b"] trailing
RUN ["echo", "x"] && echo more
HEALTHCHECK CMD ["h"] # c
VOLUME ["/v"] # c
COPY ["f", "/f"] # x
CMD ["NaN is not JSON", NaN]
