FROM alpine
ENV X=<<EOF
RUN echo "<<EOF is quoted, a word with quotes"
RUN cat<<EOF
