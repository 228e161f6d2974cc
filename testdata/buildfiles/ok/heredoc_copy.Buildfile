FROM alpine
COPY <<EOF /etc/app.conf
listen = 8080
user = $USER
EOF
COPY --chmod=0755 <<-"RUNME" /usr/local/bin/runme
	#!/bin/sh
	echo run me
	RUNME
