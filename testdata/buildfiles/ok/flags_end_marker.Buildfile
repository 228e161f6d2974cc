FROM -- alpine AS base
COPY -- a b
COPY --chown=1:2 -- --looks-like-a-flag /dst/
RUN -- echo hi
RUN --network=none -- --version
CMD -- ["a"]
ENTRYPOINT --"" x y
ENV -- A=1
ARG -- B=2
HEALTHCHECK --interval=3s -- CMD true
ONBUILD -- RUN echo trigger
