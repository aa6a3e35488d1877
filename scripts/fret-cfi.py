#!/usr/bin/env python3
"""The DWARF expression of the x86-64 return trampoline's return address rule
(`.cfi_escape` in arch-x86/src/trampoline.rs, `__tracer_define_fentry_trampolines!`).

Run it and paste the second line it prints after `0x16, 0x10, <length>` (the
first line is the length, which must stay below 128). `{dead}`, `{private}`
and `{shadow}` are asm `const` operands: offsets in `ThreadState`
(tracer/src/thread.rs, `fret_layout`).

The stack starts with the CFA (the slot S is CFA - 8); the result is the top.
Comments show the stack above the CFA.
"""
OPS = dict(lit0=0x30, lit1=0x31, lit8=0x38, lit16=0x40, minus=0x1c, plus=0x22, deref=0x06,
           dup=0x12, drop=0x13, swap=0x16, pick=0x15, eq=0x29, ne=0x2e, lt=0x2d, gt=0x2b,
           mul=0x1e, bra=0x28, skip=0x2f, const8u=0x0e, const1u=0x08, const2u=0x0a,
           deref_size=0x94)
prog = [
 # [cfa]; the CFA stays at the bottom: libgcc's DW_OP_pick refuses to
 # pick the bottom entry of the stack.
 "dup", "lit8", "minus",          # [cfa S]
 "dup", "deref",                  # [S v]
 "dup", "lit8", "minus", "deref", # [S v t]
 ("const8u", ["0x74","0x72","0x61","0x63","0x65","0x72","0x2e","0x72"]),
 "ne",                            # [S v t!=TAG]
 ("bra", "end"),                  # [S v]: v is a real return address
 # v is the trampoline: *(v - 16) is &THREADS - (v - 16)
 "dup", "lit16", "minus",         # [S v a]
 "dup", "deref", "plus",          # [S v &THREADS]
 "deref",                         # [S v head]
 "swap", "drop",                  # [S head]
 "L:thread",
 "dup", ("bra", "nonnull"),       # [S head]
 ("skip", "end"),                 # head == 0: the result is 0
 "L:nonnull",
 "dup", ("const2u", ["({dead} & 0xff)", "({dead} >> 8)"]), "plus", ("deref_size", ["1"]),
 ("bra", "next"),                 # a dead thread's block: skip it
 "dup", ("const2u", ["({private} & 0xff)", "({private} >> 8)"]), "plus", "deref",  # [S head i=depth]
 "L:frame",
 "dup", ("bra", "check"),         # [S head i]
 "drop", ("skip", "next"),
 "L:check",
 "lit1", "minus",                 # [S head j]
 "dup", ("const1u", ["128"]), "lt", ("bra", "inrange"),
 "drop", ("skip", "next"),
 "L:inrange",
 "dup", ("const1u", ["32"]), "mul",  # [S head j j*32]
 ("pick", ["2"]), "plus",
 ("const2u", ["({shadow} & 0xff)", "({shadow} >> 8)"]), "plus",  # [S head j f]
 "dup", ("const1u", ["16"]), "plus", "deref",  # [S head j f sp]
 ("pick", ["4"]), "eq", ("bra", "match"),       # [S head j f]
 "drop", ("skip", "frame"),
 "L:match",
 ("const1u", ["24"]), "plus", "deref",          # [S head j ret]
 "dup", "lit1", "gt", ("bra", "end"),           # ret > TAIL: the result
 "drop", ("skip", "frame"),
 "L:next",                                      # [S head]
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
