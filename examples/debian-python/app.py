import sys


def greeting(name: str) -> str:
    return f"hello, {name}, from Python {sys.version_info.major}.{sys.version_info.minor} on Debian"


if __name__ == "__main__":
    print(greeting(sys.argv[1] if len(sys.argv) > 1 else "world"))
