ARG BASE=alpine
ARG TAG=3.19
FROM ${BASE}:${TAG} AS base
ARG TAG
RUN echo "tag is $TAG"
