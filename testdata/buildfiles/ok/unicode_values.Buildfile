FROM alpine
LABEL description="héllo wörld ✓"
RUN echo "日本語"
ENV GREETING=Grüß
