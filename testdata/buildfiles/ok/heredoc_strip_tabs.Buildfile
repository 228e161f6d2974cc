FROM alpine
RUN <<-EOF
	echo tabs stripped
		echo two tabs
	EOF
