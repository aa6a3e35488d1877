"""Decode a tracer --perfetto export with Perfetto's own schema (the
`perfetto` Python package's perfetto_trace_pb2) and summarise it as JSON on
stdout: per-function slice counts, slices left without returning, slices
still open at the end, thread names, and whether every track's slices nest
(each SLICE_END closes the innermost open slice, in timestamp order).

Usage: perfetto_check.py TRACE.pftrace"""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())

names = {}
threads = {}
events = []  # (track, ts, order, type, name)
for i, p in enumerate(trace.packet):
    if p.HasField("interned_data"):
        for n in p.interned_data.event_names:
            names[n.iid] = n.name
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        if d.HasField("thread"):
            threads[d.uuid] = (d.thread.tid, d.thread.thread_name)
    if p.HasField("track_event"):
        e = p.track_event
        returned = True
        for a in e.debug_annotations:
            if a.name == "returned":
                returned = a.bool_value
        events.append((e.track_uuid, p.timestamp, i, e.type, names.get(e.name_iid), returned))

# Perfetto's trace processor sorts by timestamp (stable): do the same.
events.sort(key=lambda e: (e[0], e[1], e[2]))
counts, left, open_at_end, nested = {}, {}, 0, True
stacks = {}
for track, ts, _, typ, name, returned in events:
    st = stacks.setdefault(track, [])
    if typ == pb.TrackEvent.TYPE_SLICE_BEGIN:
        st.append(name)
        counts[name] = counts.get(name, 0) + 1
    elif typ == pb.TrackEvent.TYPE_SLICE_END:
        if not st:
            nested = False
            continue
        top = st.pop()
        if not returned:
            left[top] = left.get(top, 0) + 1
    elif typ == pb.TrackEvent.TYPE_INSTANT:
        counts[name] = counts.get(name, 0) + 1
for st in stacks.values():
    open_at_end += len(st)
print(json.dumps({
    "packets": len(trace.packet),
    "counts": counts,
    "left": left,
    "open_at_end": open_at_end,
    "nested": nested,
    "threads": sorted(n for _, n in threads.values()),
}))
