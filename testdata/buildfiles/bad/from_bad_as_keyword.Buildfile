FROM alpine LIKE base
