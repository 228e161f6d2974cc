FROM alpine
USER app
USER 1000:1000
USER ${UID}:${GID}
WORKDIR /srv/app
WORKDIR relative/dir
WORKDIR "/with space"
