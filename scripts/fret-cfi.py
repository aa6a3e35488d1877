#!/usr/bin/env python3
"""The DWARF expressions of the return trampolines' return address rules
(`.cfi_escape` in arch-x86/src/trampoline.rs and arch-arm/src/trampoline.rs,
`__tracer_define_fentry_trampolines!`).

    scripts/fret-cfi.py x86_64          the x86-64 rule
    scripts/fret-cfi.py aarch64         AArch64, while x30 holds the trampoline
    scripts/fret-cfi.py aarch64-saved   AArch64, once it is saved at CFA - 520

Paste the second line it prints after `0x16, <column>, <length>` (the first
line is the length, which must stay below 128). `{dead}`, `{private}` and
`{shadow}` are asm `const` operands: offsets in `ThreadState`
(tracer/src/thread.rs, `fret_layout`).

The stack starts with the CFA; the result is the top. The CFA stays at the
bottom (libgcc's DW_OP_pick refuses to pick the bottom entry); comments show
the stack above it. K is the frame's key on the shadow stack: on x86-64 the
slot the traced function's `ret` popped (CFA - 8), on AArch64 its entry
stack pointer (the CFA). v is the frame's return address as it stands: a
real one is the answer; the trampoline's (`*(v - 8)` is the tag; x86-64:
`*(v - 13)`) means it is on the shadow stack.
"""
import sys

OPS = dict(lit0=0x30, lit1=0x31, lit8=0x38, lit16=0x40, minus=0x1c, plus=0x22, deref=0x06,
           dup=0x12, drop=0x13, over=0x14, swap=0x16, pick=0x15, eq=0x29, ne=0x2e, lt=0x2d,
           gt=0x2b, mul=0x1e, bra=0x28, skip=0x2f, const8u=0x0e, const1u=0x08, const2u=0x0a,
           deref_size=0x94, shl=0x24, shr=0x25, breg30=0x8e)
TAG = ["0x74", "0x72", "0x61", "0x63", "0x65", "0x72", "0x2e", "0x72"]  # "tracer.r"
# AArch64: a return address signed with pointer authentication has a code in
# its top bits; the user address space is 48 bits: clear the top 16.
STRIP = ["lit16", "shl", "lit16", "shr"]

arch = sys.argv[1] if len(sys.argv) > 1 else "x86_64"
if arch == "x86_64":
    start = [
        "dup", "lit8", "minus",          # [K]  the slot
        "dup", "deref",                  # [K v]
    ]
elif arch == "aarch64":
    start = [
        "dup",                           # [K]  the entry stack pointer
        ("breg30", ["0"]),               # [K x30]
    ] + STRIP + [                        # [K v]
    ]
elif arch == "aarch64-saved":
    start = [
        "dup",                           # [K]
        "dup", ("const2u", ["0x08", "0x02"]), "minus", "deref",  # [K x30 saved at CFA - 520]
    ] + STRIP + [                        # [K v]
    ]
else:
    sys.exit("fret-cfi.py: x86_64, aarch64 or aarch64-saved")

# Where the tag and the offset to THREADS sit below the trampoline's
# address. x86-64: a 5-byte `call` comes between them and the trampoline (the
# entry trampoline calls it so that the return-stack predictor holds the
# trampoline's address; see arch-x86/src/trampoline.rs).
if arch == "x86_64":
    tag_at, threads_at = [("const1u", ["13"])], [("const1u", ["21"])]
else:
    tag_at, threads_at = ["lit8"], ["lit16"]

assert all(isinstance(i, tuple) or i in OPS or i.startswith("L:") for i in start)
prog = start + [
 "dup"] + tag_at + ["minus", "deref", # [K v t]
 ("const8u", TAG),
 "ne",                            # [K v t!=TAG]
 ("bra", "end"),                  # [K v]: v is a real return address
 # v is the trampoline: *(v - 16) (x86-64: v - 21) is &THREADS minus its own address
 "dup"] + threads_at + ["minus",  # [K v a]
 "dup", "deref", "plus",          # [K v &THREADS]
 "deref",                         # [K v head]
 "swap", "drop",                  # [K head]
 "L:thread",
 "dup", ("bra", "nonnull"),       # [K head]
 ("skip", "end"),                 # head == 0: the result is 0
 "L:nonnull",
 "dup", ("const2u", ["({dead} & 0xff)", "({dead} >> 8)"]), "plus", ("deref_size", ["1"]),
 ("bra", "next"),                 # a dead thread's block: skip it
 "dup", ("const2u", ["({private} & 0xff)", "({private} >> 8)"]), "plus", "deref",  # [K head i=depth]
 "L:frame",
 "dup", ("bra", "check"),         # [K head i]
 "drop", ("skip", "next"),
 "L:check",
 "lit1", "minus",                 # [K head j]
 "dup", ("const1u", ["128"]), "lt", ("bra", "inrange"),
 "drop", ("skip", "next"),
 "L:inrange",
 "dup", ("const1u", ["32"]), "mul",  # [K head j j*32]
 ("pick", ["2"]), "plus",
 ("const2u", ["({shadow} & 0xff)", "({shadow} >> 8)"]), "plus",  # [K head j f]
 "dup", ("const1u", ["16"]), "plus", "deref",  # [K head j f sp]
 ("pick", ["4"]), "eq", ("bra", "match"),       # [K head j f]
 "drop", ("skip", "frame"),
 "L:match",
 ("const1u", ["24"]), "plus", "deref",          # [K head j ret]
 "dup", "lit1", "gt", ("bra", "end"),           # ret > TAIL: the result
 "drop", ("skip", "frame"),
 "L:next",                                      # [K head]
 "deref", ("skip", "thread"),                   # head->next (offset 0)
 "L:end",
]
# two passes: sizes
def size(ins):
    if isinstance(ins, str):
        return 0 if ins.startswith("L:") else 1
    op, arg = ins
    if op in ("bra", "skip"):
        return 3
    return 1 + len(arg)
addr = {}
pos = 0
for ins in prog:
    if isinstance(ins, str) and ins.startswith("L:"):
        addr[ins[2:]] = pos
    pos += size(ins)
out = []
pos = 0
for ins in prog:
    s = size(ins)
    if isinstance(ins, str):
        if not ins.startswith("L:"):
            out.append(hex(OPS[ins]))
    else:
        op, arg = ins
        out.append(hex(OPS[op]))
        if op in ("bra", "skip"):
            off = addr[arg] - (pos + 3)
            off &= 0xffff
            out += [hex(off & 0xff), hex(off >> 8)]
        else:
            out += arg
    pos += s
assert len(out) == pos
print(pos)
print(", ".join(out))
