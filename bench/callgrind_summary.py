# Self cost per function from a callgrind dump, divided by the number of requests.
# Usage: callgrind_summary.py FILE REQUESTS
import sys, re, collections, subprocess
names={}; self_cost=collections.Counter(); fn=None; skip=False
cost_column=1   # after the position columns: 1 (line), 2 with --dump-instr=yes (instr line)
def name(tok):
    m=re.match(r'\((\d+)\)(?: (.*))?', tok)
    if m.group(2): names[m.group(1)]=m.group(2)
    return m.group(1)
for line in open(sys.argv[1]):
    line=line.rstrip('\n')
    if line.startswith('positions:'): cost_column=len(line.split())-1; continue
    if line.startswith('fn='): fn=name(line[3:]); continue
    if line.startswith('cfn='): name(line[4:]); continue
    if line.startswith('calls='): skip=True; continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        if skip: skip=False; continue
        parts=line.split()
        if len(parts)>cost_column and fn: self_cost[fn]+=int(parts[cost_column])
total=sum(self_cost.values())
n=int(sys.argv[2]) if len(sys.argv)>2 else 1
print(f"{n} requests, {total:,} instructions, {total//n:,} per request")
syms=[names.get(k,k) for k,_ in self_cost.most_common(25)]
dem=subprocess.run(['swift','demangle','--simplified'],input='\n'.join(syms),capture_output=True,text=True).stdout.split('\n')
for (k,v),d in zip(self_cost.most_common(25),dem):
    print(f"{v*100/total:5.1f}% {v//n:7d}  {d[:150]}")
