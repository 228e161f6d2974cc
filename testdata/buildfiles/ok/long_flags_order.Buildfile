FROM alpine
COPY --chmod=600 --chown=0:0 --link --exclude=a --from=x src dst
RUN --security=insecure --mount=type=tmpfs,target=/t --network=none --mount=type=cache,target=/c true
