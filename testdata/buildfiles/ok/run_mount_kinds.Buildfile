FROM alpine
RUN --mount=type=bind,source=src,target=/src,ro make -C /src
RUN --mount=target=/ctx ls /ctx
RUN --mount=type=tmpfs,target=/tmp,size=64m df /tmp
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required=true npm ci
RUN --mount=type=ssh,id=default git clone git@example.com:x/y.git
RUN --mount=type=bind,from=builder,source=/out,target=/in cp /in/app /usr/bin/
RUN --mount="type=cache,target=/a b,id=quoted" true
