# pdl_check.py PTX SASS (scripts/pdl_check.sh runs it): per kernel, the
# global loads before the PDL wait in the PTX against those in the SASS;
# exits 1 when a kernel has fewer in the SASS (ptxas hoisted the wait).
import re, sys, subprocess
def ptx_counts(f):
    d = {}; name = None; c = 0; done = False
    for line in open(f):
        m = re.match(r'\.visible \.entry (\S+)\(', line) or re.match(r'\.entry (\S+)\(', line)
        if m: name, c, done = m.group(1), 0, False; continue
        if name is None or done: continue
        if re.search(r'\bld\.global|cp\.async\.(ca|cg)', line): c += 1
        if 'griddepcontrol.wait' in line: d[name] = c; done = True
    return d
def sass_counts(f):
    d = {}; name = None; c = 0; done = False
    for line in open(f):
        m = re.match(r'\.text\.(\S+):', line)
        if m: name, c, done = m.group(1), 0, False; continue
        if name is None or done: continue
        if re.search(r'\bLDG|LDGSTS', line): c += 1
        if 'ACQBULK' in line: d[name] = c; done = True
    return d
p, s = ptx_counts(sys.argv[1]), sass_counts(sys.argv[2])
bad = 0
for k in sorted(p):
    if k in s and p[k] > 0 and s[k] < p[k]:
        bad += 1
        n = subprocess.run(['c++filt', k], capture_output=True, text=True).stdout.strip()
        print(f"{p[k]:3d} -> {s[k]:3d}  {n[:110]}")
print(f"{bad} kernels with loads moved past the wait, of {len(p)} that wait")
sys.exit(1 if bad else 0)
