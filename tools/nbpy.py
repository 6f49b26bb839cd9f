"""Round-trip notebooks <-> percent-format scripts, and execute a notebook in place (outputs kept).

    python tools/nbpy.py to-nb  scratch/03_losses.py nbs/03_losses.ipynb   # percent script -> notebook (no outputs)
    python tools/nbpy.py to-py  nbs/03_losses.ipynb  scratch/03_losses.py   # notebook -> percent script
    python tools/nbpy.py run    nbs/03_losses.ipynb                        # execute in nbs/, store outputs
    python tools/nbpy.py normalize nbs/*.ipynb                             # sources as lists of lines (nbformat's form)

Percent format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell (each line prefixed by
`# `), and `# %% tags=["parameters"]` a code cell with tags. nbs/*.ipynb stay the source of truth: scripts are
an editing aid and are never committed (put them under scratch/, which git ignores).
"""
import json
import os
import re
import sys
from pathlib import Path

_HDR = re.compile(r'^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$')

def py_to_cells(text):
    cells, cur = [], None
    for line in text.splitlines():
        m = _HDR.match(line)
        if m:
            if cur is not None: cells.append(cur)
            cur = dict(kind='markdown' if m['md'] else 'code', tags=json.loads(m['tags']) if m['tags'] else None, lines=[])
            continue
        if cur is None:
            if not line.strip(): continue
            cur = dict(kind='code', tags=None, lines=[])
        cur['lines'].append(line)
    if cur is not None: cells.append(cur)
    out = []
    for c in cells:
        lines = c['lines']
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if c['kind'] == 'markdown':
            lines = [l[2:] if l.startswith('# ') else (l[1:] if l.startswith('#') else l) for l in lines]
        src = '\n'.join(lines)
        md = {'tags': c['tags']} if c['tags'] else {}
        if c['kind'] == 'markdown':
            out.append({'cell_type': 'markdown', 'metadata': md, 'source': src})
        else:
            out.append({'cell_type': 'code', 'execution_count': None, 'metadata': md, 'outputs': [], 'source': src})
    # keep the key order nbformat writes (cell_type, execution_count, id, metadata, ...) so nbdev_clean is a no-op
    return out

def to_nb(src, dest):
    "Write the notebook; a cell whose source text is unchanged keeps the id and the stored outputs it had in `dest`."
    import uuid
    cells = py_to_cells(Path(src).read_text())
    old = {}
    if Path(dest).exists():
        for c in json.loads(Path(dest).read_text()).get('cells', []):
            s = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
            if 'id' in c: old.setdefault((c['cell_type'], s), []).append(c)
    used = set()
    for c in cells:
        prev = [o for o in old.get((c['cell_type'], c['source']), []) if o['id'] not in used]
        c['id'] = prev[0]['id'] if prev else uuid.uuid4().hex[:8]
        if prev and c['cell_type'] == 'code':
            c['outputs'], c['execution_count'] = prev[0].get('outputs', []), prev[0].get('execution_count')
        used.add(c['id'])
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    write_nb(nb, dest)

def write_nb(nb, dest):
    "Write `nb` as nbformat does (sources as lists of lines), so diffs and merges stay line by line."
    for c in nb['cells']:
        if isinstance(c['source'], str): c['source'] = c['source'].splitlines(keepends=True)
    Path(dest).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def normalize(*paths):
    "Rewrite notebooks whose cell sources are single strings into nbformat's list-of-lines form."
    for p in paths: write_nb(json.loads(Path(p).read_text()), p)

def to_py(src, dest):
    nb = json.loads(Path(src).read_text())
    parts = []
    for c in nb['cells']:
        s = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        tags = c.get('metadata', {}).get('tags')
        t = f' tags={json.dumps(tags)}' if tags else ''
        if c['cell_type'] == 'markdown':
            parts.append(f'# %% [markdown]{t}\n' + '\n'.join(('# ' + l) if l else '#' for l in s.split('\n')))
        else:
            parts.append(f'# %%{t}\n' + s)
    Path(dest).write_text('\n\n'.join(parts) + '\n')

def run(path):
    "Execute a notebook in its own folder with nbclient and keep the outputs (then run nbdev_clean)."
    import nbformat
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    tmp = path.with_suffix('.ipynb.tmp')
    nbformat.write(nb, tmp)
    os.replace(tmp, path)

if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    {'to-nb': to_nb, 'to-py': to_py, 'run': run, 'normalize': normalize}[cmd](*args)
