#!/usr/bin/env python3
"""How much code a broker runs through per message, from a callgrind profile.

    valgrind --tool=callgrind --dump-instr=yes ...   (the broker, during a paced run)
    python3 hot_lines.py callgrind.out MIN_COUNT

Counts the instructions executed at least MIN_COUNT times (about the number of messages
in the profiled window: the code every message runs), their bytes, and the distinct
64-byte cache lines they lie in, then the bytes per function, largest first.
"""
import collections
import re
import sys


def position(token, previous):
    """A callgrind position: absolute, relative (+n / -n) or the same (*)."""
    if token == "*":
        return previous
    if token[0] == "+":
        return previous + int(token[1:], 0)
    if token[0] == "-":
        return previous - int(token[1:], 0)
    return int(token, 0)


def main(path, min_count):
    names, function = {}, None
    address = 0
    count = collections.defaultdict(int)  # instruction address -> times executed
    function_of = {}
    after_calls = False
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        named = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if named:
            kind, key, name = named.groups()
            if name:
                names[key] = name
            if kind == "fn":
                function = names.get(key, key)
            continue
        if line.startswith("calls="):
            after_calls = True  # the next cost line is a call's inclusive cost
            continue
        if line[0] in "0123456789+-*":
            fields = line.split()
            address = position(fields[0], address)
            if after_calls:
                after_calls = False
                continue
            count[address] += int(fields[2]) if len(fields) > 2 else 0
            function_of[address] = function
    addresses = sorted(count)
    index = {a: i for i, a in enumerate(addresses)}
    hot = [a for a in addresses if count[a] >= min_count]
    size, lines = 0, set()
    per_function = collections.Counter()
    for a in hot:
        i = index[a]
        # An instruction's length: up to the next one seen (at most 15 bytes).
        length = min(addresses[i + 1] - a, 15) if i + 1 < len(addresses) else 4
        size += length
        per_function[function_of[a]] += length
        lines.add(a // 64)
    print(f"instructions {len(hot)}, {size} bytes, {len(lines)} cache lines "
          f"({len(lines) * 64 / 1024:.1f} KiB)")
    for name, bytes_ in per_function.most_common(40):
        print(f"{bytes_:7d} {name[:140]}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
