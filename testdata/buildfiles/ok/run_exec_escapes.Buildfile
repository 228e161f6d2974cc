FROM alpine
RUN ["printf", "a\tb\n", "quote\"d", "\u00e9t\u00e9", "back\\slash"]
