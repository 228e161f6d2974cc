# a leading comment (not a directive)

   # indented comment
FROM alpine

# between instructions
RUN echo a # not a comment: passed to the shell
