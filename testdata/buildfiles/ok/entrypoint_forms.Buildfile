FROM alpine
ENTRYPOINT ["/docker-entrypoint.sh"]
ENTRYPOINT exec top -b
