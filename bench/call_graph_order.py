# The call graph of a proxied request, as lld's --call-graph-ordering-file wants it ("caller callee
# weight" per line), from a callgrind dump made with --demangle=no: the calls between functions of the
# tollgate binary made at least once per 1 000 requests, the weight being the number of calls.
# Usage: call_graph_order.py FILE REQUESTS OUT
import re, collections, sys
dump, requests, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = {}; objects = {}; owner = {}; edges = collections.Counter()
fn = cfn = obj = cobj = None; pending = None
for line in open(dump):
    line = line.rstrip('\n')
    m = re.match(r'(ob|cob)=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(3): objects[m.group(2)] = m.group(3)
        if m.group(1) == 'ob': obj = objects[m.group(2)]
        else: cobj = objects[m.group(2)]
        continue
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(3): names[m.group(2)] = m.group(3)
        if m.group(1) == 'fn': fn = names[m.group(2)]; owner[fn] = obj; cobj = obj
        else: cfn = names[m.group(2)]; owner.setdefault(cfn, cobj)
        continue
    if line.startswith('calls='): pending = int(line[6:].split()[0]); continue
    if pending is not None and line and (line[0].isdigit() or line[0] in '+-*'):
        edges[(fn, cfn)] += pending; pending = None
binary = next(o for o in set(objects.values()) if o.endswith('/tollgate'))
kept = [(a, b, c) for (a, b), c in edges.most_common()
        if owner.get(a) == binary and owner.get(b) == binary and a != b and c * 1000 >= requests]
with open(out_path, 'w') as out:
    for a, b, c in kept: out.write(f"{a} {b} {c}\n")
print(f"{len(kept)} calls between {len({x for e in kept for x in e[:2]})} functions")
