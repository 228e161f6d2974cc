FROM alpine
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN echo in bash
SHELL ["powershell", "-command"]
