FROM alpine
RUNN echo typo
