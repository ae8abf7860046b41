"""Regenerate timm_groupoct/cli/timm_train_defaults.json: every option of timm's train.py with its default.

`timm-groupoct train --config` accepts a timm recipe (an args.yaml timm's train.py wrote, or a hand-written one)
and needs these defaults to tell the keys that change nothing from the ones it would have to ignore.

    python scripts/timm_train_defaults.py PATH/TO/pytorch-image-models/train.py [COMMIT]
"""
import importlib.util
import json
import sys
from pathlib import Path


def main(train_py: str, commit: str = '') -> None:
    spec = importlib.util.spec_from_file_location('timm_train_script', train_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines its parser at import; main() runs only as __main__
    defaults = {a.dest: a.default for a in module.parser._actions if a.dest != 'help'}
    out = Path(__file__).resolve().parents[1] / 'timm_groupoct' / 'cli' / 'timm_train_defaults.json'
    out.write_text(json.dumps(dict(source=f'timm train.py {commit}'.strip(), defaults=defaults), indent=1) + '\n')
    print(f'{len(defaults)} options -> {out}')


if __name__ == '__main__':
    main(*sys.argv[1:])
