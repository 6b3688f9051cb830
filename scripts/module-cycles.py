#!/usr/bin/env python3
"""Reports import circles between the top-level modules of each library crate.

A module is a file or folder directly under `src/`; an edge A -> B is any `crate::B`
path (in a `use` or inline) written in A's files. Tests (`#[cfg(test)]` blocks in a
`tests.rs` or a trailing `mod tests`) are counted too: a circle there is still a circle.
Exits 1 and names every strongly connected set of more than one module.

Usage: scripts/module-cycles.py [crate-dir ...]   (default: agent controller shared net)
"""
import re
import sys
from pathlib import Path

USE_BLOCK = re.compile(r"\buse\s+crate::\{([^;]*)\};", re.S)
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def modules(src: Path):
    for entry in sorted(src.iterdir()):
        if entry.name in ("lib.rs", "main.rs"):
            continue
        if entry.is_dir():
            yield entry.name, sorted(entry.rglob("*.rs"))
        elif entry.suffix == ".rs":
            files = [entry]
            sub = src / entry.stem
            if sub.is_dir():
                files += sorted(sub.rglob("*.rs"))
            yield entry.stem, files


def edges(name, files, known):
    out = set()
    for f in files:
        text = f.read_text()
        text = re.sub(r"//[^\n]*", "", text)
        targets = PATH.findall(text)
        for block in USE_BLOCK.findall(text):
            targets += re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)\s*(?:::|,|}|$)", block)
        out.update(t for t in targets if t in known and t != name)
    return out


def sccs(graph):
    index, low, on, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            result.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def main():
    root = Path(__file__).resolve().parent.parent
    crates = sys.argv[1:] or ["agent", "controller", "shared", "net"]
    failed = False
    for crate in crates:
        src = root / crate / "src"
        mods = dict(modules(src))
        graph = {m: edges(m, files, mods) for m, files in mods.items()}
        for group in sccs(graph):
            if len(group) > 1:
                failed = True
                links = [f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group]
                print(f"{crate}: import circle among {', '.join(group)}: {'; '.join(links)}")
    if not failed:
        print(f"no import circle between the top-level modules of {', '.join(crates)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
