FROM alpine AS one two
