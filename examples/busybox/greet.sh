#!/bin/sh
# version: 1.0
echo "$GREETING (version $(cat /etc/greet-version), running as $(id -un))"
