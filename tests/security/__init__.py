"""Issue 10: each test reproduces a way hostile input could reach the host or corrupt the store,
and asserts the host stays untouched while the build fails clearly or succeeds safely."""
