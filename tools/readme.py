"""Build README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which is not on these machines).

Markdown cells are copied as they are; code cells become ```python blocks (cells starting with `#| hide` are
left out, `#| ` directives are dropped); stream outputs of shown cells follow as plain blocks.
    python tools/readme.py           # write README.md
    python tools/readme.py --check   # exit 1 if README.md is out of date
"""
import json
import os
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = ['<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->']
    for c in nb['cells']:
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        if c['cell_type'] == 'markdown':
            parts.append(src.strip())
        elif c['cell_type'] == 'code':
            lines = src.split('\n')
            if any(l.strip() in ('#| hide', '#|hide') for l in lines[:3]): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
            for o in c.get('outputs', []):
                if o.get('output_type') == 'stream':
                    txt = ''.join(o['text']).rstrip()
                    if txt: parts.append(f'```\n{txt}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text = render()
    out = root/'README.md'
    if '--check' in sys.argv:
        if not out.exists() or out.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/readme.py` and commit it')
        sys.exit(0)
    tmp = out.with_suffix('.md.tmp'); tmp.write_text(text); os.replace(tmp, out)
