FROM alpine
RUN echo crlf \
    joined
CMD ["sh"]
