from alpine
run echo lower
Copy a b
eNv X=1
workdir /srv
cmd ["sh"]
