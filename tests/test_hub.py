"""torch.hub entry points from hubconf.py."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timm_groupoct

ROOT = Path(__file__).resolve().parents[1]


def _load_hubconf():
    spec = importlib.util.spec_from_file_location('hubconf', ROOT / 'hubconf.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_load_local_with_kwargs():
    model = torch.hub.load(str(ROOT), 'groupnet_small', source='local', num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 1_020_618
    assert model.pretrained_cfg['architecture'] == 'groupnet_small'


def test_every_model_is_an_entry_point():
    hubconf = _load_hubconf()
    # what torch.hub.list() computes for a repo
    entries = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith('_')]
    assert entries == sorted(timm_groupoct.list_models())


def test_entry_point_docstring_says_what_the_model_is():
    doc = _load_hubconf().groupnet_small.__doc__
    assert doc.startswith('GroupNet-Small: grouped-convolution bottleneck network')
    assert "timm.create_model('groupnet_small', ...)" in doc


def test_unknown_entry_point():
    with pytest.raises(AttributeError, match="no entry point 'resnet50'"):
        _load_hubconf().resnet50


def test_hubconf_imports_lazily():
    code = (
        'import importlib.util, sys\n'
        f'spec = importlib.util.spec_from_file_location("hubconf", {str(ROOT / "hubconf.py")!r})\n'
        'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n'
        'print("timm" in sys.modules, "timm_groupoct" in sys.modules, "torch" in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'False', 'False']
