FROM python:3.12-slim
RUN python3 <<PY
print("hello")
PY
RUN <<EOT bash
set -e
echo "$HOME"
EOT
