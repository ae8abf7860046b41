"""`timm-groupoct timm-script SCRIPT [ARGS...]`: run one of timm's scripts with this package's models registered.

timm's scripts (train.py, validate.py, inference.py, benchmark.py, onnx_export.py in its repository) know only
the models registered when they run, and timm has no plugin mechanism: this runs SCRIPT as `python SCRIPT ARGS`
would, as `__main__`, after `import timm_groupoct`.
"""
import argparse
import runpy
import sys
from pathlib import Path

from ._common import CLIError


def add_parser(sub):
    p = sub.add_parser(
        'timm-script', help="run a timm script (train.py, validate.py, ...) with this package's models",
        description=__doc__.split('\n', 2)[2] + '\nExample: timm-groupoct timm-script pytorch-image-models/validate.py '
                    '--model oct_resnet50 --data-dir imagenet/ --pretrained')
    p.add_argument('script', help='path of the script, e.g. pytorch-image-models/validate.py')
    p.add_argument('script_args', nargs=argparse.REMAINDER, help="the script's own arguments")
    p.set_defaults(run=run)


def run(args) -> int:
    script = Path(args.script)
    if not script.is_file():
        raise CLIError(f"no script {script}: give the path of one of timm's scripts (they are in its repository, "
                       f"https://github.com/huggingface/pytorch-image-models, not in the pip package)")
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args.script_args]
    sys.path.insert(0, str(script.resolve().parent))  # as `python SCRIPT` puts the script's folder first
    try:
        runpy.run_path(str(script), run_name='__main__')
    except SystemExit as e:  # the script's own exit status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.path[:] = argv, path
    return 0
