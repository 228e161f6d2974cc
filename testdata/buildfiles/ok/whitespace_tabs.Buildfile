FROM	alpine
RUN	echo	tabs	inside
	ENV	A=1
  COPY   a    b
