from app import greeting

assert greeting("x").startswith("hello, x, from Python 3."), greeting("x")
print("app tests passed")
