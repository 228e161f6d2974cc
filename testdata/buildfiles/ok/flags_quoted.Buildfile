FROM alpine
COPY --chown="app:app" a /a
RUN --mount=type=cache,target="/cache dir" true
COPY --link=true b /b
