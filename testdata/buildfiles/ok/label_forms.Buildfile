FROM alpine
LABEL version="1.0" description="A \"quoted\" value" 'single'='x y'
LABEL "com.example.vendor"="ACME Inc"
LABEL legacy a value with spaces
LABEL multi.line="yes" \
      other="no"
LABEL empty=
