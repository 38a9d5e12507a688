#!/usr/bin/env python3
"""Recounts the summary tables of docs/parity-api.md from its rows (run after editing rows)."""
import re, collections
import os
p=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'parity-api.md')
s=open(p).read()
lines=s.split('\n')
pkg=None
per_pkg=collections.OrderedDict()
status_counts=collections.Counter()
option_by_issue=collections.Counter()
for l in lines:
    m=re.match(r"^## `([^`]+)` — ", l)
    if m:
        pkg=m.group(1); per_pkg[pkg]=collections.Counter(); continue
    m=re.match(r"^\| (\d+) \|.*\| ([^|]*) \|$", l)
    if m and pkg:
        st=m.group(2).strip()
        if st.startswith('done'): k='done'
        elif st.startswith('partial'): k='partial'
        elif st.startswith('option only'):
            k='option only'
            mm=re.search(r"#(\d+)", st); option_by_issue['#'+mm.group(1)]+=1
        elif st.startswith('planned (no issue'): k='planned (no issue)'
        elif st.startswith('planned #'):
            mm=re.match(r"planned (#\d+)", st); k='planned '+mm.group(1)
        elif st.startswith('n/a'): k='n/a'
        else: raise SystemExit("unknown status: "+l)
        status_counts[k]+=1
        per_pkg[pkg][k]+=1
total=sum(status_counts.values())
order=['done','partial','option only']+sorted([k for k in status_counts if k.startswith('planned #')], key=lambda x:int(x[9:]))+['planned (no issue)','n/a']
out=["| status | rows |","|---|---|"]
for k in order:
    if k=='option only':
        detail=', '.join(f"{i}: {n}" for i,n in sorted(option_by_issue.items(), key=lambda x:int(x[0][1:])))
        label=f"option only ({detail})" if detail else "option only"
        out.append(f"| {label} | {status_counts[k]} |")
    else:
        out.append(f"| {k} | {status_counts[k]} |")
out.append(f"| **total** | **{total}** |")
planned=sum(v for k,v in status_counts.items() if k.startswith('planned #'))
pk=["| package | rows | done | partial | option only | planned | planned (no issue) | n/a |","|---|---|---|---|---|---|---|---|"]
for name,c in per_pkg.items():
    pl=sum(v for k,v in c.items() if k.startswith('planned #'))
    pk.append(f"| `{name}` | {sum(c.values())} | {c['done']} | {c['partial']} | {c['option only']} | {pl} | {c['planned (no issue)']} | {c['n/a']} |")
a=s.index("| status | rows |"); b=s.index("\n\nAll planned rows together:")
s=s[:a]+'\n'.join(out)+s[b:]
s=re.sub(r"All planned rows together: \d+\.", f"All planned rows together: {planned}.", s)
a=s.index("| package | rows |"); b=s.index("\n\n## Gaps no open issue covers")
s=s[:a]+'\n'.join(pk)+s[b:]
open(p,'w').write(s)
print(dict(status_counts), total)
