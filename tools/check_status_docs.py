#!/usr/bin/env python3
"""tools/check_status_docs.py -- the statuses each public function documents
are the statuses its code can return.

    tools/check_status_docs.py [SOURCE_DIR]     (default: the tree above tools/)

For every public function that returns dd_status (a DD_API declaration in
include/deepdefense/*.h, or a static inline wrapper there), the documented
set is every DD_OK / DD_ERR_* name in its doc comment, with those of the
functions it refers to ("the statuses of f", "Statuses as f()", "Returns
as f"; a wrapper saying "see f_sized()" inherits f_sized's) and without
"without DD_ERR_x". The code's set is computed from lib/: the statuses the
function's body returns (the status argument of DD_RETURN_IF, DD_ERROR,
dd__set_error and dd_set_last_error, `return DD_ERR_x`, `s = DD_ERR_x`,
DD_CHECK_ARG = DD_ERR_INVALID_ARGUMENT, DD_CHECK_DNNL = DD_ERR_BACKEND +
DD_ERR_OUT_OF_MEMORY, and those of the function-like macros it uses),
united with the sets of every library function it calls or passes as a
pointer, transitively (static functions resolved within their file); a
call through an ops table (`->run(`) counts as a call of every function
put in that slot (`.run = f`). That over-approximates: a function that
maps a callee's status to another one still inherits the callee's. Such
places are listed in MASK below, each with its reason.

Fails, naming the function, when
  - the code can return a status the doc does not list (a caller would not
    know to handle it), or
  - the doc lists a status the code cannot return (the doc is wrong), or
  - the doc lists no status at all.
Test "status_docs" runs it; tests/status_docs/ holds a fixture it must fail
on (test "status_docs_checker_fails"). `check_status_docs.py ROOT NAME
STATUS` prints one call path by which NAME can return STATUS (for
deciding whether a report is a doc to fix or a MASK entry).
"""
import os
import re
import sys

ERR = re.compile(r"\bDD_(?:OK|ERR_[A-Z_]+)\b")

# Where the over-approximation is wrong, with the reason. MASK: statuses a
# function's callees return that the function never returns.
MASK = {
    "create_fwd": {"DD_ERR_UNSUPPORTED": "the initial value of s, always overwritten by make()"},
    "run_forwards": {
        "DD_ERR_UNSUPPORTED": "a fused kernel's DD_ERR_UNSUPPORTED makes the chain run node by node"
    },
    "dd_zoo_create": {
        "DD_ERR_STATE": "the 'model already built' of dd_model_add_* and dd_model_build: "
        "dd_zoo_create builds the model it has just created, once"
    },
    "make_shadows": {
        "DD_ERR_FORMAT": "the architecture text parsed is the model's own, from dd__model_to_arch"
    },
    "dd_dataset_open_cifar10_memory": {"DD_ERR_IO": "a memory reader does no I/O"},
    "arch_build": {
        "DD_ERR_STATE": "every add/build status goes through arch_engine_fail (DD_ERR_FORMAT)",
        "DD_ERR_UNSUPPORTED": "every add/build status goes through arch_engine_fail (DD_ERR_FORMAT)",
    },
    "dd_dataset_open_idx_memory": {"DD_ERR_IO": "a memory reader does no I/O"},
    "dd__atk_forward": {
        "DD_ERR_STATE": "dd_model_forward's 'not built': an attack's model was built when the "
        "attack was created, and a model is never unbuilt"
    },
}
# Functions whose status is their argument.
PASSTHROUGH = {"dd_set_last_error": "returns its argument s"}


def strip_comments_and_strings(src):
    """Blanks comments and string literals (keeping newlines), so braces and
    names inside them do not count."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + " " * (j - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


DEF = re.compile(r"^((?:DD_API\s+|DD_INTERNAL\s+|static\s+|inline\s+)*)dd_status\s+(\w+)\s*\(", re.M)


def functions(code):
    """name -> (body, static) of every dd_status function defined in code
    (comments stripped); a body is the text from the '{' after the
    parameters to its matching brace."""
    found = {}
    for m in DEF.finditer(code):
        name = m.group(2)
        static = "static" in m.group(1)
        j = m.end()
        depth = 1
        while j < len(code) and depth:  # the parameter list
            depth += {"(": 1, ")": -1}.get(code[j], 0)
            j += 1
        k = j
        while k < len(code) and code[k] in " \t\n":
            k += 1
        if k >= len(code) or code[k] != "{":
            continue  # a declaration
        depth, e = 0, k
        while e < len(code):
            depth += {"{": 1, "}": -1}.get(code[e], 0)
            e += 1
            if depth == 0:
                break
        found[name] = (code[k:e], static)
    return found


MACROS = {}  # function-like macro of lib/ -> the statuses it returns


def args_of(text, start):
    """The top-level, comma-separated arguments of the call whose '(' is at
    text[start - 1]."""
    depth, cur, out, i = 1, [], [], start
    while i < len(text) and depth:
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                break
        if c == "," and depth == 1:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def returned_statuses(body):
    """The DD_ERR_* a body returns: DD_RETURN_IF's status argument,
    DD_ERROR's and dd__set_error's first, `return DD_ERR_x`, and
    assignments `s = DD_ERR_x` (returned later); a name only compared or
    passed elsewhere does not count."""
    s = set()
    for m in re.finditer(r"\b(DD_RETURN_IF|DD_ERROR|dd__set_error|dd_set_last_error)\s*\(", body):
        a = args_of(body, m.end())
        arg = a[1] if m.group(1) == "DD_RETURN_IF" and len(a) > 1 else a[0]
        s |= set(ERR.findall(arg))
    s |= set(re.findall(r"\breturn\s*\(?\s*(DD_ERR_[A-Z_]+)", body))
    s |= set(re.findall(r"[^=!<>]=\s*(DD_ERR_[A-Z_]+)\s*;", body))
    for name in re.findall(r"\b(\w+)\s*\(", body):
        s |= MACROS.get(name, set())
    if "DD_CHECK_ARG(" in body:
        s.add("DD_ERR_INVALID_ARGUMENT")
    if "DD_CHECK_DNNL(" in body or "dd__dnnl_error(" in body:
        s |= {"DD_ERR_BACKEND", "DD_ERR_OUT_OF_MEMORY"}
    return s - {"DD_OK"}



def header_docs(inc):
    """name -> (documented statuses, doc text) of each public dd_status
    function: DD_API declarations and static inline wrappers."""
    docs = {}
    for fn in sorted(os.listdir(inc)):
        if not (fn.endswith(".h") or fn.endswith(".h.in")):
            continue
        text = open(os.path.join(inc, fn)).read()
        pat = re.compile(
            r"/\*\*((?:[^*]|\*(?!/))*)\*/\s*(?:DD_API|static\s+inline)\s+dd_status\s+(\w+)\s*\(", re.S
        )
        for m in pat.finditer(text):
            docs[m.group(2)] = (set(ERR.findall(m.group(1))), m.group(1), fn)
    return docs


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    inc = os.path.join(root, "include", "deepdefense")
    lib = os.path.join(root, "lib")
    # A static function is keyed "file:name" and seen from its file only.
    bodies, slots, files_of = {}, {}, {}
    for d, _, files in os.walk(lib):
        for f in sorted(files):
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.relpath(os.path.join(d, f), lib)
            code = strip_comments_and_strings(open(os.path.join(d, f)).read())
            for name, text in re.findall(r"^#\s*define\s+(\w+)\((.*?)(?<!\\)$", code, re.M | re.S):
                MACROS[name] = returned_statuses(text)
            for name, (body, static) in functions(code).items():
                key = f"{path}:{name}" if static else name
                bodies[key] = body
                files_of[key] = path
            for slot, fn in re.findall(r"\.(\w+)\s*=\s*(\w+)\s*[,}\n]", code):
                slots.setdefault(slot, set()).add((path, fn))

    def resolve(path, name):
        if f"{path}:{name}" in bodies:
            return f"{path}:{name}"
        return name if name in bodies else None

    calls = {}
    for key, body in bodies.items():
        path = files_of[key]
        # a call, or a function passed as a pointer (dd__guarded_grads(m, fn, arg))
        called = {resolve(path, c) for c in set(re.findall(r"\b(\w+)\b", body))}
        for slot in re.findall(r"->\s*(\w+)\s*\(", body):
            called |= {resolve(p, f) for (p, f) in slots.get(slot, ())}
        calls[key] = called - {None, key}
    memo = {}

    def can_return(name, stack=()):
        if name in memo:
            return memo[name]
        if name in stack:
            return set()
        s = returned_statuses(bodies.get(name, ""))
        for c in calls.get(name, ()):
            s |= can_return(c, stack + (name,))
        s -= set(MASK.get(name.split(":")[-1], {}))
        if not stack:
            memo[name] = s
        return s

    if len(sys.argv) > 3:  # ROOT NAME STATUS: one call path that returns STATUS
        def path(name, status, seen):
            if status in returned_statuses(bodies.get(name, "")):
                return [name]
            for c in sorted(calls.get(name, ())):
                if c not in seen and status in can_return(c):
                    seen.add(c)
                    p = path(c, status, seen)
                    if p:
                        return [name] + p
            return None
        print(" -> ".join(path(sys.argv[2], sys.argv[3], set()) or ["none"]))
        return 0
    docs = header_docs(inc)

    def documented_of(name, seen=()):
        """The doc's statuses, with those of the functions it refers to
        ("the statuses of f and g", "Statuses as f()", "Returns as f")
        included, and "without DD_ERR_x" taken out."""
        own, text, _ = docs[name]
        out = set(own)
        for clause in re.findall(r"(?:[Ss]tatuses (?:of|as)|Returns as)\s+([^.;]*)", text):
            for ref in re.findall(r"\b(dd_\w+)", clause):
                if ref in docs and ref != name and ref not in seen:
                    out |= documented_of(ref, seen + (name,))
        out -= set(re.findall(r"without (DD_ERR_[A-Z_]+)", text))
        return out

    bad = 0
    for name in sorted(docs):
        _, text, header = docs[name]
        documented = documented_of(name)
        if name in PASSTHROUGH:
            continue
        see = re.search(r"see (\w+_sized)\(\)", text)
        if not (documented - {"DD_OK"}) and see and see.group(1) in docs:
            documented = documented_of(see.group(1))
        impl = name if name in bodies else (see.group(1) if see else None)
        if impl not in bodies:
            print(f"{header}: {name}: no definition found in lib/")
            bad = 1
            continue
        code = can_return(impl) | {"DD_OK"}
        if not documented:
            print(f"{header}: {name}: the doc comment lists no status (it can return {', '.join(sorted(code))})")
            bad = 1
            continue
        missing = sorted(code - documented)
        extra = sorted(documented - code)
        if missing:
            print(f"{header}: {name}: can return {', '.join(missing)}, not documented")
            bad = 1
        if extra:
            print(f"{header}: {name}: documents {', '.join(extra)}, which its code cannot return")
            bad = 1
    if not bad:
        print(f"status docs: {len(docs)} functions, each documents exactly the statuses its code can return")
    return bad


if __name__ == "__main__":
    sys.exit(main())
