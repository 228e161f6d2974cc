"""The build context as COPY, ADD and bind mounts see it: the walk (tree.py: selection,
containment, the content digest), `.dockerignore` (dockerignore.py), the stat cache that spares
re-reading unchanged files (statcache.py), and reading files inside a root without following
links out of it (inroot.py)."""
