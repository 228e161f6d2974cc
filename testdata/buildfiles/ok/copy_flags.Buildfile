FROM alpine AS build
FROM alpine
COPY --from=build /out/app /usr/local/bin/app
COPY --from=0 /etc/passwd /tmp/
COPY --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf
COPY --chown=1000:1000 --chmod=755 script.sh /bin/
COPY --link --parents ./a/b/c.txt ./x/ /dst/
COPY --exclude=*.tmp --exclude=**/cache src/ /src/
COPY ["a b", "c", "/dst/"]
COPY *.txt /data/
