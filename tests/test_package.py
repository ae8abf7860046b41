"""Registration with timm: our names, no collisions, no network on import."""
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import timm
import timm.models

import timm_groupoct

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = [
    'groupconvnet', 'groupnet_base', 'groupnet_small', 'groupnet_small_gn', 'groupnet_tiny',
    'oct_resnet26', 'oct_resnet50', 'oct_resnet101', 'oct_resnext50_32x4d', 'octnet_mini', 'octnet_mini_gn',
    'resnext29_8x64d', 'resnext29_16x64d', 'resnext50_1x64d_gn', 'resnext50_32x4d_gn', 'resnext50_32x4d_gnws',
    'resnext101_32x8d_gn', 'resnext_simple11_4g',
]


def _run(code: str, **env) -> str:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**__import__('os').environ, **env})
    return out.stdout


def test_list_models_is_ours():
    assert timm_groupoct.list_models() == EXPECTED
    assert timm_groupoct.list_models('groupnet_*') == [
        'groupnet_base', 'groupnet_small', 'groupnet_small_gn', 'groupnet_tiny']
    for name in EXPECTED:
        assert timm.is_model(name)
        assert timm.models.model_entrypoint(name).__module__.startswith('timm_groupoct.models.')


def test_no_name_collides_with_timm():
    # timm alone, in a fresh interpreter: what it registers before we add ours
    timm_names = set(json.loads(_run('import json, timm; print(json.dumps(timm.list_models()))')))
    assert len(timm_names) > 1000
    assert not timm_names & set(timm_groupoct.list_models())


def test_no_model_module_shares_a_timm_module_name():
    timm_modules = {m.name for m in pkgutil.iter_modules(timm.models.__path__)}
    ours = {m.name for m in pkgutil.iter_modules(timm_groupoct.models.__path__)}
    assert set(timm_groupoct.FAMILY_MODULES) <= ours
    assert not (ours - {'__init__'}) & timm_modules, ours & timm_modules


def test_import_makes_no_network_call():
    code = (
        'import socket\n'
        'def refuse(*a, **k): raise AssertionError("network call during import")\n'
        'socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n'
        'import timm, timm_groupoct\n'
        'm = timm.create_model("groupnet_small", num_classes=10)\n'
        'print(len(timm_groupoct.list_models()))\n')
    assert _run(code, HF_HUB_OFFLINE='0').strip() == str(len(EXPECTED))


