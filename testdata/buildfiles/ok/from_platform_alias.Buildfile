FROM --platform=$BUILDPLATFORM golang:1.22 AS Builder
FROM --platform=linux/arm64 debian:bookworm-slim as runtime
