FROM alpine
VOLUME /data
VOLUME /var/log /var/db
VOLUME ["/json/one", "/json two"]
VOLUME [not json]
