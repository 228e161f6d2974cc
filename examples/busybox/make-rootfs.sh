#!/bin/sh
# Build a minimal busybox root file system from the host's static busybox (Debian: busybox-static)
# and write it as a deterministic tar (sorted names, numeric owners, fixed mtime) to $1.
#   examples/busybox/make-rootfs.sh busybox-rootfs.tar
set -eu
out=${1:?usage: $0 OUTPUT.tar}
busybox=${BUSYBOX:-/bin/busybox}
mtime=${SOURCE_DATE_EPOCH:-1577836800}
[ -x "$busybox" ] || { echo "$busybox missing: apt-get install busybox-static" >&2; exit 1; }

umask 022
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
mkdir -p "$root"
for d in bin dev etc home home/app proc root sys tmp usr usr/bin usr/sbin sbin var; do
    mkdir "$root/$d"
done
chmod 0555 "$root/proc" "$root/sys"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
[ -L "$root/bin/sh" ] || ln -s busybox "$root/bin/sh"

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
app:x:1000:
staff:x:50:app
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# As root the real owners go into the tar (home/app is 1000:1000); without root every entry is
# recorded as 0:0 (home/app included) so the script still works for a normal user.
if [ "$(id -u)" = 0 ]; then
    chown -R 0:0 "$root"
    chown 1000:1000 "$root/home/app"
    owner_opts="--numeric-owner"
else
    owner_opts="--numeric-owner --owner=0 --group=0"
fi
find "$root" -exec touch -h -d "@$mtime" {} +
# shellcheck disable=SC2086
tar --create --file="$out" --directory="$root" \
    --sort=name $owner_opts \
    --mtime="@$mtime" --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --transform='s,^\./,,' --show-transformed-names \
    $(cd "$root" && ls -A | sort)
echo "wrote $out" >&2
