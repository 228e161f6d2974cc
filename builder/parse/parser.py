"""Buildfile text -> AST: the pre-pass, one Lark parse, then the tree turned into ast types.

Syntax lives in grammar/buildfile.lark; this module only checks what a grammar cannot (which
flags an instruction accepts, durations, stage names, ONBUILD triggers) and builds the AST.
Every failure is a ParseError pointing at the offending token; Lark's exceptions never escape.
"""
from __future__ import annotations

import csv
import difflib
import json
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, cast

from lark import Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from builder.errors import ParseError, Pos
from builder.parse import ast
from builder.parse.grammar import get_parser
from builder.parse.lines import LogicalLine, Prepared, prepare
from builder.parse.ports import PortSpecError, parse_port_spec

KEYWORDS = frozenset({
    "FROM", "RUN", "CMD", "ENTRYPOINT", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})

USAGE = {
    "FROM": "FROM [--platform=<platform>] <image> [AS <name>]",
    "RUN": "RUN [--mount=...] [--network=...] [--security=...] <command> | [\"exe\", \"arg\"...]",
    "CMD": "CMD <command> | [\"exe\", \"arg\"...]",
    "ENTRYPOINT": "ENTRYPOINT <command> | [\"exe\", \"arg\"...]",
    "LABEL": "LABEL <key>=<value> [<key>=<value>...]",
    "MAINTAINER": "MAINTAINER <name>",
    "EXPOSE": "EXPOSE <port>[/<protocol>]...",
    "ENV": "ENV <key>=<value> [<key>=<value>...]",
    "ADD": "ADD [--chown=...] [--chmod=...] [--link] [--checksum=...] [--keep-git-dir] [--exclude=...] <src>... <dest>",
    "COPY": "COPY [--from=...] [--chown=...] [--chmod=...] [--link] [--parents] [--exclude=...] <src>... <dest>",
    "VOLUME": "VOLUME <path>... | [\"<path>\"...]",
    "USER": "USER <user>[:<group>]",
    "WORKDIR": "WORKDIR <path>",
    "ARG": "ARG <name>[=<default>]...",
    "ONBUILD": "ONBUILD <instruction>",
    "STOPSIGNAL": "STOPSIGNAL <signal>",
    "HEALTHCHECK": "HEALTHCHECK [--interval=...] [--timeout=...] [--start-period=...] [--start-interval=...] [--retries=N] CMD <command> | HEALTHCHECK NONE",
    "SHELL": "SHELL [\"executable\", \"parameters\"...]",
}

MISSING = {
    "FROM": "FROM requires an image name",
    "ADD": "ADD requires at least two arguments: a source and a destination",
    "COPY": "COPY requires at least two arguments: a source and a destination",
    "ENV": "ENV requires a name and a value",
    "LABEL": "LABEL requires a key and a value",
    "ONBUILD": "ONBUILD requires an instruction to trigger",
    "HEALTHCHECK": "HEALTHCHECK requires CMD <command> or NONE",
    "SHELL": "SHELL requires the arguments to be in JSON form",
}

ALLOWED_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "RUN": ("mount", "network", "security"),
    "ADD": ("chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"),
    "COPY": ("from", "chown", "chmod", "link", "parents", "exclude"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}
BOOL_FLAGS = frozenset({"link", "parents", "keep-git-dir"})
REPEATABLE_FLAGS = frozenset({"mount", "exclude"})
MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_BARE_MOUNT_OPTIONS = ("ro", "readonly", "rw", "readwrite", "required")  # BuildKit: the rest need =value
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
# `\d+(?:\.\d*)?`, not `\d+\.?\d*`: the same numbers, but only one way to match a run of
# digits, so a 60 000-digit --interval fails in linear time instead of quadratic.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_TRIGGER_REFUSED = {
    "ONBUILD": "ONBUILD ONBUILD is not allowed",
    "FROM": "FROM isn't allowed as an ONBUILD trigger",
    "MAINTAINER": "MAINTAINER isn't allowed as an ONBUILD trigger",
}

# Lark types every child of a tree as Token | Tree. Which one a given child is, the grammar
# (grammar/buildfile.lark) decides, so the code below casts to what the rule holds there.


def _start(token: Token) -> int:
    """Where `token` starts in the text Lark parsed.

    Lark's lexer sets start_pos on every token it makes; its type is Optional for tokens made by hand."""
    return cast(int, token.start_pos)


def parse_buildfile(text: str, path: str = "Buildfile") -> ast.Buildfile:
    """Parse a whole Buildfile; raise ParseError with the position of the first mistake."""
    prepared = prepare(text, path)
    if not prepared.lines:
        raise _nothing_to_parse(text, prepared, path)
    builder = _AstBuilder(prepared, path)
    return ast.Buildfile(
        path=path,
        escape=prepared.escape,
        directives=tuple(prepared.directives),
        instructions=builder.build(),
    )


def _nothing_to_parse(text: str, prepared: Prepared, path: str) -> ParseError:
    """BuildKit refuses an empty Dockerfile, and one of only comments and blank lines."""
    first_line = prepared.physical[0] if prepared.physical else ""
    if not text:
        return ParseError("the Buildfile is empty", pos=Pos(path, 1, 1), source_line=first_line,
                          hint="a Buildfile needs at least a FROM instruction")
    return ParseError("file with no instructions", pos=Pos(path, 1, 1), source_line=first_line,
                      hint="the file holds only comments and blank lines; add a FROM instruction")


def _flag_tokens(flag_tree: Tree) -> list[Token]:
    """The FLAG tokens of a `*_flags` subtree, in order.

    The flags rules are left-recursive, so the subtree is as deep as there are flags; Lark's
    recursive `scan_values` hit Python's recursion limit on a line of a few thousand flags.
    """
    found: list[Token] = []
    stack: list[Any] = [flag_tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Tree):
            stack.extend(reversed(node.children))
        elif isinstance(node, Token) and node.type == "FLAG":
            found.append(node)
    return found


def _unquote_flag(word: str) -> str:
    """Quote and backslash removal as Docker's extractBuilderFlags does for flag words."""
    out: list[str] = []
    quote = ""
    index = 0
    while index < len(word):
        char = word[index]
        if quote and char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote = char
        elif char == "\\":
            index += 1
            if index < len(word):
                out.append(word[index])
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _go_json(text: str) -> Any:
    """`text` decoded as Go's json.Unmarshal would: Python's json also takes NaN and Infinity,
    which Go refuses (and a refused line is shell form, not a non-string array)."""
    return json.loads(text, parse_constant=_refuse_constant)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_strings(text: str) -> list[str]:
    """A JSON list of strings (the grammar's JSON_ARRAY) as Go decodes it: a `\\uD800` escape
    that is not half of a pair becomes U+FFFD, as Go's decoder makes it (Python would keep a
    lone surrogate, which no UTF-8 config or cache key can hold)."""
    return [_LONE_SURROGATE.sub("\ufffd", item) for item in json.loads(text)]


def _did_you_mean(word: str, choices: list[str], prefix: str) -> str:
    """`did you mean RUN? ` when `word` is a likely typo of one of `choices`, else ""."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def _split_key_value(word: str, escape: str) -> tuple[str, str]:
    """Split `key=value` at the first `=` outside quotes and escapes; both sides stay raw."""
    quote = ""
    index = 0
    while index < len(word):
        char = word[index]
        if quote:
            if char == quote:
                quote = ""
            elif char == escape and quote == '"':
                index += 1
        elif char in "'\"":
            quote = char
        elif char == escape:
            index += 1
        elif char == "=":
            return word[:index], word[index + 1 :]
        index += 1
    return word, ""


def parse_duration(text: str) -> int | None:
    """Nanoseconds of a Go duration (`1m30s`, `500ms`, `0`), or None when it is not one."""
    sign = 1
    body = text
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        return None
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if not match:
            return None
        total += float(match.group(1)) * _NANOS[match.group(2)]
        position = match.end()
    if total >= 2**63:  # Go's time.Duration is an int64: larger is "invalid duration"
        return None
    return int(sign * total)


@dataclass
class _Flags:
    """Flags of one instruction after validation, by name (repeatable ones keep every value)."""

    items: tuple[ast.Flag, ...]
    offsets: tuple[int, ...] = ()  # where each flag starts in the parsed text, for errors

    def offset(self, name: str) -> int:
        # A hand-made _Flags may carry no offsets: then there is nothing to point at.
        for flag, offset in zip(self.items, self.offsets, strict=False):
            if flag.name == name:
                return offset
        raise KeyError(name)

    def value(self, name: str) -> str | None:
        for flag in self.items:
            if flag.name == name:
                return flag.value
        return None

    def values(self, name: str) -> tuple[str, ...]:
        return tuple(flag.value or "" for flag in self.items if flag.name == name)

    def boolean(self, name: str) -> bool:
        for flag in self.items:
            if flag.name == name:
                return flag.value is None or flag.value.lower() == "true"
        return False


class _AstBuilder:
    """Turns the Lark tree of a whole file into ast instructions."""

    def __init__(self, prepared: Prepared, path: str) -> None:
        self.prepared = prepared
        self.path = path
        self.escape = prepared.escape
        self.bases: list[int] = []
        self.line: LogicalLine | None = None
        self.joined = ""  # all logical lines, each ending in "\n": what Lark parsed
        self._top_level = True  # False while building an ONBUILD trigger (no heredocs there)

    # ---- positions and errors -----------------------------------------------------------

    def _locate(self, offset: int) -> tuple[LogicalLine, int]:
        index = max(bisect_right(self.bases, offset) - 1, 0)
        return self.prepared.lines[index], offset - self.bases[index]

    def pos(self, offset: int) -> Pos:
        line, local = self._locate(offset)
        number, column = line.position(local)
        return Pos(self.path, number, column)

    def error(self, message: str, offset: int, hint: str | None = None) -> ParseError:
        pos = self.pos(offset)
        physical = self.prepared.physical
        source_line = physical[pos.line - 1] if 0 < pos.line <= len(physical) else None
        return ParseError(message, pos=pos, hint=hint, source_line=source_line)

    # ---- the whole file -----------------------------------------------------------------

    def build(self) -> tuple[ast.Instruction, ...]:
        lines = self.prepared.lines
        if not lines:
            return ()
        offset = 0
        for line in lines:
            self.bases.append(offset)
            offset += len(line.text) + 1
        joined = "".join(line.text + "\n" for line in lines)
        self.joined = joined
        try:
            tree = get_parser(self.escape).parse(joined)
        except UnexpectedInput as failure:
            raise self._syntax_error(failure, joined) from None
        except LarkError as failure:  # anything else Lark may raise is still a parse error
            raise ParseError(f"cannot parse: {failure}", pos=Pos(self.path, 1, 1)) from None
        instructions = []
        # The start rule's children, one instruction tree per line, popped so that each is freed
        # as the AST grows: a lower peak.
        trees = cast("list[Tree[Token]]", tree.children)
        trees.reverse()
        for line in lines:
            self.line = line
            instructions.append(self.instruction(trees.pop()))
        return tuple(instructions)

    def _syntax_error(self, failure: UnexpectedInput, joined: str) -> ParseError:
        if isinstance(failure, UnexpectedToken) and failure.token.start_pos is not None:
            offset = failure.token.start_pos
            at_end = failure.token.type in ("_NL", "$END")
            expected = set(failure.expected)
        elif isinstance(failure, UnexpectedCharacters) and failure.pos_in_stream is not None:
            offset = failure.pos_in_stream
            at_end = joined[offset : offset + 1] == "\n"
            expected = set(failure.allowed or ())
        else:
            offset = max(len(joined) - 1, 0)
            at_end = True
            expected = set()
        line, local = self._locate(offset)
        base = offset - local
        words = [(m.start(), m.group()) for m in re.finditer(r"\S+", line.text)]
        found = line.text[local:].split(None, 1)[0] if not at_end and line.text[local:].strip() else ""
        # The instruction the mistake is in: the trigger for ONBUILD, else the first word.
        keyword_start, keyword = words[0]
        if keyword.upper() == "ONBUILD" and len(words) > 1 and local >= words[1][0]:
            keyword_start, keyword = words[1]
        keyword = keyword.upper()
        if len(expected & KEYWORDS) > 1 or keyword not in KEYWORDS:  # an instruction was due here
            if at_end:
                return self.error(MISSING["ONBUILD"], base + words[0][0], f"usage: {USAGE['ONBUILD']}")
            return self.error(
                f"unknown instruction: {found or keyword}", offset,
                _did_you_mean((found or keyword).upper(), sorted(KEYWORDS), "")
                + "instructions are FROM, RUN, COPY, ADD, ENV, ARG, ... (see the Dockerfile reference)",
            )
        hint = f"usage: {USAGE[keyword]}"
        if at_end and keyword == "FROM" and len(words) >= 3:
            return self.error("FROM ... AS requires a stage name", base + words[-1][0], hint)
        if at_end and keyword == "HEALTHCHECK" and "REST" in expected:
            return self.error("HEALTHCHECK CMD requires a command", base + keyword_start, hint)
        if at_end:
            message = MISSING.get(keyword, f"{keyword} requires at least one argument")
            return self.error(message, base + keyword_start, hint)
        if keyword in ("ENV", "LABEL") and "KEY_VALUE" in expected:
            return self.error(f"can't find = in {found!r}; must be of the form name=value", offset, hint)
        if keyword == "HEALTHCHECK" and {"NONE", "CMD"} & expected:
            return self.error(f"unknown HEALTHCHECK type {found!r} (use CMD or NONE)", offset, hint)
        if keyword == "HEALTHCHECK" and expected == {"_NL"}:
            return self.error("HEALTHCHECK NONE takes no arguments", offset, hint)
        if keyword == "SHELL":
            return self.error(MISSING["SHELL"], offset, hint)
        if keyword == "FROM":
            return self.error(f"FROM takes an image and optionally AS <name>, not {found!r}", offset, hint)
        return self.error(f"unexpected {found!r} in {keyword}", offset, hint)

    # ---- one instruction ----------------------------------------------------------------

    def instruction(self, tree: Tree) -> ast.Instruction:
        keyword_token = cast(Token, tree.children[0])
        keyword = keyword_token.type
        last = tree.children[-1]
        if keyword == "HEALTHCHECK" and isinstance(last, Token) and last.type == "NONE":
            # BuildKit reads HEALTHCHECK's flags only for CMD: `HEALTHCHECK --interval=5s NONE`
            # (or any other flag before NONE) is accepted and the flags are dropped.
            flags = _Flags(())
        else:
            flags = self.flags(tree, keyword)
        common = {
            "pos": self.pos(_start(keyword_token)),
            "source": self.line.source if self.line else "",
            "flags": flags.items,
        }
        handler = getattr(self, f"_{keyword.lower()}")
        return handler(tree, keyword_token, flags, common)

    def flags(self, tree: Tree, keyword: str) -> _Flags:
        allowed = ALLOWED_FLAGS.get(keyword, ())
        found: list[ast.Flag] = []
        offsets: list[int] = []
        flag_tree = tree.children[1] if len(tree.children) > 1 else None
        if not isinstance(flag_tree, Tree) or not flag_tree.data.endswith("_flags"):
            return _Flags(())
        for token in _flag_tokens(flag_tree):
            start = _start(token)
            # As BuildKit: quotes and escapes come off the whole word, then the name ends at "=".
            name, eq, value_text = _unquote_flag(str(token))[2:].partition("=")
            value = value_text if eq else None
            if name not in allowed:
                accepted = ", ".join(f"--{a}" for a in allowed) if allowed else "no flags"
                raise self.error(
                    f"unknown flag --{name} for {keyword}", start,
                    _did_you_mean(name, sorted(allowed), "--") + f"{keyword} accepts {accepted}",
                )
            if name not in REPEATABLE_FLAGS and any(flag.name == name for flag in found):
                raise self.error(f"duplicate flag --{name}", start, "give each flag once")
            if name in BOOL_FLAGS:
                if value is not None and value.lower() not in ("true", "false"):
                    raise self.error(
                        f"expecting boolean value for flag --{name}, not: {value}", start,
                        f"use --{name}, --{name}=true or --{name}=false",
                    )
            elif not value:
                raise self.error(f"missing a value on flag --{name}", start, f"write --{name}=<value>")
            found.append(ast.Flag(name=name, value=value, pos=self.pos(start)))
            offsets.append(start)
        return _Flags(tuple(found), tuple(offsets))

    def command(self, tree: Tree) -> ast.Command:
        token = cast(Token, tree.children[0])
        if tree.data == "exec_form":
            try:
                return ast.ExecCommand(tuple(_json_strings(str(token))))
            except ValueError:
                return ast.ShellCommand(str(token))
        text = str(token)
        if text.startswith("["):
            try:
                decoded = _go_json(text)
            except (ValueError, RecursionError):  # not JSON (or absurdly nested): shell form
                decoded = None
            if isinstance(decoded, list):  # a JSON array, but not of strings only
                raise self.error(
                    "when using JSON array syntax, arrays must be comprised of strings only",
                    _start(token), 'quote every element, e.g. ["echo", "1"]',
                )
        return ast.ShellCommand(text)

    def refuse_non_string_json(self, tokens: list[Token]) -> None:
        """Whitespace-split arguments that are really a JSON array with non-strings: Docker refuses them."""
        first, last = tokens[0], tokens[-1]
        if not str(first).startswith("["):
            return
        text = self.joined[first.start_pos : last.end_pos]
        try:
            decoded = _go_json(text)
        except (ValueError, RecursionError):
            return  # not JSON at all: plain words, as Docker reads them
        if isinstance(decoded, list):
            raise self.error(
                "when using JSON array syntax, arrays must be comprised of strings only",
                _start(first), 'quote every element, e.g. ["src", "/dest/"]',
            )

    def json_list(self, token: Token) -> list[str]:
        """A JSON_ARRAY token's strings (the grammar only lets a flat list of JSON strings through)."""
        try:
            return _json_strings(str(token))
        except ValueError as failure:
            raise self.error(f"invalid JSON: {failure}", _start(token), 'write a JSON list of strings: ["a", "b"]') from None

    # ---- handlers, one per keyword ------------------------------------------------------

    def _from(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        tokens = [child for child in tree.children[2:] if isinstance(child, Token)]
        alias = None
        if len(tokens) == 3:
            alias = str(tokens[2]).lower()
            if "$" not in alias and not _STAGE_NAME.match(alias):
                raise self.error(
                    f"invalid name for build stage: {str(tokens[2])!r}", _start(tokens[2]),
                    "a stage name starts with a letter and holds only letters, digits, '-', '_' and '.'",
                )
        return ast.From(**common, image=str(tokens[0]), platform=flags.value("platform"), alias=alias)

    def _run(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        mounts = tuple(
            self.mount(flag, offset) for flag, offset in zip(flags.items, flags.offsets, strict=False) if flag.name == "mount"
        )
        network = flags.value("network")
        security = flags.value("security")
        self.check_choice(flags, "network", NETWORK_MODES)
        self.check_choice(flags, "security", SECURITY_MODES)
        return ast.Run(
            **common, command=self.command(tree.children[2]), heredocs=self.heredocs(),
            mounts=mounts, network=network, security=security,
        )

    def check_choice(self, flags: _Flags, name: str, choices: tuple[str, ...]) -> None:
        value = flags.value(name)
        if value is not None and "$" not in value and value not in choices:
            raise self.error(f"unknown {name} mode {value!r}", flags.offset(name), f"use one of: {', '.join(choices)}")

    def mount(self, flag: ast.Flag, offset: int) -> ast.Mount:
        value = flag.value or ""
        try:
            fields = next(csv.reader([value]))
        except (csv.Error, StopIteration):
            fields = []
        mount_type = "bind"
        options: list[tuple[str, str]] = []
        for field_text in fields:
            key, eq, option = field_text.partition("=")
            key = key.strip().lower()
            if not key:
                continue
            if key == "type":
                mount_type = option.lower()  # BuildKit lower-cases the type
                continue
            if not eq and key not in _BARE_MOUNT_OPTIONS:
                raise self.error(
                    f"invalid field {field_text!r} in --mount: it must be a key=value pair", offset,
                    f"write {key}=<value>; only {', '.join(_BARE_MOUNT_OPTIONS)} may stand alone",
                )
            options.append((key, option if eq else "true"))
        if mount_type not in MOUNT_TYPES:
            raise self.error(
                f"unsupported mount type {mount_type!r}", offset,
                f"use type= one of: {', '.join(MOUNT_TYPES)}",
            )
        return ast.Mount(type=mount_type, options=tuple(options))

    def _cmd(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Cmd(**common, command=self.command(tree.children[2]))

    def _entrypoint(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Entrypoint(**common, command=self.command(tree.children[2]))

    def pairs(self, tree: Tree) -> tuple[tuple[str, str], ...]:
        if tree.data == "legacy_pair":
            name, value = tree.children
            return ((str(name), str(value)),)
        return tuple(_split_key_value(str(token), self.escape) for token in tree.children)

    def _label(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Label(**common, pairs=self.pairs(tree.children[2]))

    def _env(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Env(**common, pairs=self.pairs(tree.children[2]))

    def _maintainer(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Maintainer(**common, name=str(tree.children[2]))

    def _expose(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        tokens = [cast(Token, token) for token in tree.children[2:]]
        for token in tokens:
            if "$" not in token and self.prepared.escape not in token:  # else checked once expanded
                try:
                    parse_port_spec(str(token))
                except PortSpecError as error:
                    raise self.error(str(error), _start(token),
                                     "write EXPOSE PORT, PORT/tcp|udp|sctp or LOW-HIGH/PROTO, ports from 0 to 65535") from None
        return ast.Expose(**common, ports=tuple(str(token) for token in tokens))

    def file_args(self, tree: Tree, keyword: Token) -> tuple[tuple[str, ...], str, bool]:
        if tree.data == "json_files":
            items = self.json_list(cast(Token, tree.children[0]))
            if len(items) < 2:
                raise self.error(MISSING[keyword.type], _start(keyword), f"usage: {USAGE[keyword.type]}")
            return tuple(items[:-1]), items[-1], True
        tokens = cast("list[Token]", tree.children)
        self.refuse_non_string_json(tokens)
        words = [str(token) for token in tokens]
        return tuple(words[:-1]), words[-1], False

    def _add(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        sources, dest, json_form = self.file_args(tree.children[2], keyword)
        return ast.Add(
            **common, sources=sources, dest=dest, heredocs=self.heredocs(),
            chown=flags.value("chown"), chmod=flags.value("chmod"), link=flags.boolean("link"),
            keep_git_dir=flags.boolean("keep-git-dir"), checksum=flags.value("checksum"),
            exclude=flags.values("exclude"), json_form=json_form,
        )

    def _copy(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        sources, dest, json_form = self.file_args(tree.children[2], keyword)
        return ast.Copy(
            **common, sources=sources, dest=dest, heredocs=self.heredocs(),
            from_=flags.value("from"), chown=flags.value("chown"), chmod=flags.value("chmod"),
            link=flags.boolean("link"), parents=flags.boolean("parents"),
            exclude=flags.values("exclude"), json_form=json_form,
        )

    def heredocs(self) -> tuple[ast.Heredoc, ...]:
        if self.line is None or not self._top_level:
            return ()
        return tuple(self.line.heredocs)

    def _volume(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        tokens = cast("list[Token]", tree.children[2:])
        if len(tokens) == 1 and tokens[0].type == "JSON_ARRAY":
            paths = tuple(self.json_list(tokens[0]))
            if not paths:
                raise self.error("VOLUME requires at least one argument", _start(keyword), f"usage: {USAGE['VOLUME']}")
        else:
            self.refuse_non_string_json(tokens)
            paths = tuple(str(token) for token in tokens)
        return ast.Volume(**common, paths=paths)

    def _user(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.User(**common, user=str(tree.children[2]))

    def _workdir(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Workdir(**common, path=str(tree.children[2]))

    def _arg(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        args: list[tuple[str, str | None]] = []
        for token in cast("list[Token]", tree.children[2:]):
            name, eq, default = str(token).partition("=")
            if not name:
                raise self.error("ARG requires a name before '='", _start(token), f"usage: {USAGE['ARG']}")
            args.append((name, default if eq else None))
        return ast.Arg(**common, args=tuple(args))

    def _onbuild(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        trigger_tree = cast(Tree, tree.children[2])
        trigger_keyword = cast(Token, trigger_tree.children[0])
        refused = _TRIGGER_REFUSED.get(trigger_keyword.type)
        if refused:
            raise self.error(refused, _start(trigger_keyword), "ONBUILD triggers are instructions such as RUN, COPY or ENV")
        self._top_level = False
        try:
            trigger = self.instruction(trigger_tree)
        finally:
            self._top_level = True
        return ast.Onbuild(**common, trigger=trigger)

    def _stopsignal(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        return ast.Stopsignal(**common, signal=str(tree.children[2]))

    def _healthcheck(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        kind = cast(Token, tree.children[2])
        if kind.type == "NONE":
            return ast.Healthcheck(**common, command=None)
        durations: dict[str, int | None] = {}
        for name in ("interval", "timeout", "start-period", "start-interval"):
            value = flags.value(name)
            if value is not None:
                nanos = parse_duration(value)
                if nanos is None:
                    raise self.error(
                        f"invalid duration {value!r} for --{name}", flags.offset(name),
                        "durations look like 30s, 1m30s or 500ms",
                    )
                if nanos != 0 and nanos < 1_000_000:
                    raise self.error(
                        f"--{name} cannot be less than 1ms", flags.offset(name),
                        "use 0 for the default, or a duration of at least 1ms",
                    )
                durations[name.replace("-", "_")] = nanos
        retries = None
        retries_text = flags.value("retries")
        if retries_text is not None:
            name = "retries"
            if not re.fullmatch(r"[+-]?[0-9]+", retries_text):
                raise self.error(f"invalid --retries {retries_text!r}: not a number", flags.offset(name), "use a whole number, e.g. --retries=3")
            if len(retries_text.lstrip("+-").lstrip("0")) > 18:  # Docker parses an int64
                raise self.error(f"--retries {retries_text!r} is out of range", flags.offset(name), "use a whole number, e.g. --retries=3")
            retries = int(retries_text)
            if retries < 0:
                raise self.error(f"--retries cannot be negative ({retries})", flags.offset(name), "use a whole number >= 0")
        return ast.Healthcheck(
            **common, command=self.command(tree.children[3]), retries=retries,
            interval=durations.get("interval"), timeout=durations.get("timeout"),
            start_period=durations.get("start_period"), start_interval=durations.get("start_interval"),
        )

    def _shell(self, tree: Tree, keyword: Token, flags: _Flags, common: dict[str, Any]) -> ast.Instruction:
        argv = tuple(self.json_list(cast(Token, tree.children[2])))
        if not argv:
            raise self.error("SHELL requires at least one argument", _start(keyword), f"usage: {USAGE['SHELL']}")
        return ast.Shell(**common, argv=argv)
