FROM alpine
RUN <<FILE1 cat > /file1 && <<FILE2 cat > /file2
first
FILE1
second
FILE2
