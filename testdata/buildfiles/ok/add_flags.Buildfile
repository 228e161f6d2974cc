FROM alpine
ADD --chown=app:app --chmod=644 files/ /srv/
ADD --link https://example.com/a.tar.gz /tmp/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/x /x
ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.12.0 /src
ADD --exclude=*.md --exclude=tests/ . /app
ADD ["with space.txt", "/dst dir/"]
ADD --link=false a.tar /
