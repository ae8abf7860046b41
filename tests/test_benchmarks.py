"""The benchmark scripts run and print their tables (tiny sizes: a smoke test, not a timing)."""
import importlib.util
import re
from pathlib import Path

import torch.nn as nn

BENCHMARKS = Path(__file__).resolve().parents[1] / 'benchmarks'


def _load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when the script runs: its folder is on sys.path
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_octconv_speed_prints_latency_ratio_and_stage_tables(capsys, monkeypatch):
    bench = _load('octconv_speed', monkeypatch)
    bench.main(['--alphas', '0.5', '--batch-sizes', '1', '--img-size', '32', '--rounds', '1', '--stages',
                '--threads', '1'])
    out = capsys.readouterr().out
    row = re.search(r'^oct_resnet50 a=0.5\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$', out, re.M)
    assert row and float(row[2]) == 0.589  # FLOP ratio to resnet50 at 32 px (0.579 at 224)
    assert re.search(r'^resnet50\s+\S+\s+1\.000\s+.*\s1\.000$', out, re.M)
    assert 'per stage' in out and re.search(r'^  FLOP ratio\s+1\.00\s+0\.46\s+0\.48\s+0\.47\s+0\.95', out, re.M)


def test_octconv_speed_reparam_rows_fold_both_models(capsys, monkeypatch):
    bench = _load('octconv_speed', monkeypatch)
    bench.main(['--alphas', '0.5', '--batch-sizes', '1', '--img-size', '32', '--rounds', '1', '--reparam',
                '--threads', '1'])
    out = capsys.readouterr().out
    for name in ('resnet50 +reparam', 'oct_resnet50 a=0.5 +reparam'):  # folding keeps the FLOPs
        assert re.search(rf'^{re.escape(name)}\s+\S+\s+(0\.589|1\.000)\s', out, re.M)
    assert re.search(r'ratio to resnet50 \+reparam:\n  oct_resnet50 a=0.5 \+reparam\s+[\d.]+$', out, re.M)
    makers = bench.build(bench.argparse.Namespace(alphas=[0.5], reparam=True, reference=None, img_size=32))
    for name in ('resnet50 +reparam', 'oct_resnet50 a=0.5 +reparam'):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in makers[name]().modules())


def test_pointwise_gemm_compares_the_same_weights_with_and_without_gemms(capsys, monkeypatch):
    bench = _load('pointwise_gemm', monkeypatch)
    bench.main(['--models', 'oct_resnet26', '--batch-sizes', '1', '--img-size', '32', '--rounds', '1'])
    assert re.search(r'^oct_resnet26\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+$', capsys.readouterr().out, re.M)
