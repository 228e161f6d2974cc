FROM alpine
ENV A=1
ENV B="two words" C='single $quoted' D=esc\ aped E=$A
ENV LEGACY value with spaces
ENV PATH=/opt/bin:$PATH
ENV EMPTY=
