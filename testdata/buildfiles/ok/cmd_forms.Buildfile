FROM alpine
CMD echo shell form
CMD ["echo", "exec", "form"]
CMD ["--flag-like-arg"]
