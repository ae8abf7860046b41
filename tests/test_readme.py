"""Every Python and shell code block of README.md runs, in order, in one working folder: what a user copies works.
A block right after a `<!-- skip: REASON -->` line (one that needs the network, a GPU or data the tests do not
have) is left out, and says why."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r'(?:<!-- skip: (?P<skip>[^>]*) -->\n)?```(?P<lang>python|bash)\n(?P<code>.*?)```', re.S)


def readme_blocks():
    return [(m['lang'], m['code'], m['skip']) for m in BLOCK.finditer((ROOT / 'README.md').read_text())]


def test_readme_is_a_short_users_page():
    assert len((ROOT / 'README.md').read_text()) < 12_000
    assert not re.search(r'\bseed 00\d', (ROOT / 'README.md').read_text(), re.I)


def test_every_skipped_block_says_why():
    skipped = [skip for _, _, skip in readme_blocks() if skip is not None]
    assert skipped and all(reason.strip() for reason in skipped)


def test_readme_code_blocks_run(tmp_path, monkeypatch):
    for name in ('hubconf.py', 'configs'):  # what the blocks use from a checkout
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}')
    namespace = {'__name__': '__readme__'}
    ran = 0
    for lang, code, skip in readme_blocks():
        if skip is not None:
            continue
        if lang == 'python':
            exec(compile(code, 'README.md', 'exec'), namespace)
        else:
            done = subprocess.run(['bash', '-euo', 'pipefail', '-c', code], env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f'{code}\n{done.stdout}\n{done.stderr}'
        ran += 1
    assert ran >= 8
