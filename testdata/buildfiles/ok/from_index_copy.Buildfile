FROM alpine
RUN echo stage0 > /s0
FROM alpine
COPY --from=0 /s0 /s0
