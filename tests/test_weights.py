"""The weight lifecycle: export -> Hub folder -> load by hf-hub: / local-dir: / torch.hub, and its safety."""
import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import timm_groupoct  # noqa: F401
from timm_groupoct.cli import main
from timm_groupoct.hub import CheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ['groupnet_small', 'resnext_simple11_4g', 'octnet_mini']


def _trained(name: str, num_classes: int = 10) -> nn.Module:
    """A model with non-trivial weights: a few SGD steps on random data, then random norm statistics."""
    model = timm.create_model(name, num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, num_classes, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    return model.eval()


def _training_checkpoint(model: nn.Module, path: Path) -> Path:
    """As timm's train.py saves one: state_dict with epoch, arch, metric and the argparse Namespace."""
    torch.save({'epoch': 7, 'arch': model.pretrained_cfg['architecture'], 'state_dict': model.state_dict(),
                'metric': 91.25, 'args': argparse.Namespace(lr=0.1, model='x')}, path)
    return path


@pytest.mark.parametrize('name', FAMILIES)
def test_export_and_load_by_hf_hub_name(tmp_path, hub_cache, name, capsys):
    model = _trained(name)
    ckpt = _training_checkpoint(model, tmp_path / 'last.pth')
    out = tmp_path / 'export'
    assert main(['export', name, '--checkpoint', str(ckpt), '--out', str(out), '--labels', ','.join('0123456789')]) == 0
    assert f"local-dir:{out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    hub_cache.add(f'test-org/{name}', {p.name: p for p in out.iterdir()})

    x = torch.randn(2, 3, 32, 32)
    for ref in (f'hf-hub:test-org/{name}', f'local-dir:{out}'):
        loaded = timm.create_model(ref, pretrained=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    # fine-tuning and backbone uses of the published folder
    five = timm.create_model(f'hf-hub:test-org/{name}', pretrained=True, num_classes=5)
    assert five.get_classifier().out_features == 5
    grey = timm.create_model(f'hf-hub:test-org/{name}', pretrained=True, in_chans=1)
    first_conv = grey.pretrained_cfg['first_conv']
    torch.testing.assert_close(grey.get_submodule(first_conv).weight,
                               model.get_submodule(first_conv).weight.sum(1, keepdim=True))
    backbone = timm.create_model(f'hf-hub:test-org/{name}', pretrained=True, features_only=True).eval()
    with torch.no_grad():
        feats = backbone(x)
        ref_feats = model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(feats, ref_feats):
        torch.testing.assert_close(a, b)


def test_export_writes_timm_config_and_a_model_card(tmp_path):
    model = _trained('octnet_mini')
    ckpt = _training_checkpoint(model, tmp_path / 'ckpt.pth')
    out = tmp_path / 'card'
    assert main(['export', 'octnet_mini', '--checkpoint', str(ckpt), '--out', str(out),
                 '--labels', ','.join(f'digit-{i}' for i in range(10))]) == 0
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'octnet_mini' and config['num_classes'] == 10
    assert config['label_names'] == [f'digit-{i}' for i in range(10)]
    assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
    card = (out / 'README.md').read_text()
    assert '# octnet_mini' in card and 'OctNet-Mini: octave-conv network for 32x32 inputs' in card
    assert '- **Parameters:** 224,842' in card and '- **GFLOPs:** 0.20 at 3x32x32' in card
    assert '| top1 | 91.25 |' in card and '- **Epochs trained:** 7' in card  # from the training checkpoint
    assert "timm.create_model('hf-hub:ORG/REPO', pretrained=True)" in card


def test_export_metrics_from_the_command_line_and_safetensors_input(tmp_path):
    from safetensors.torch import save_file
    model = _trained('groupnet_small', num_classes=3)
    ckpt = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(ckpt))
    out = tmp_path / 'st'
    assert main(['export', 'groupnet_small', '--checkpoint', str(ckpt), '--out', str(out),
                 '--metric', 'top1=88.5', '--metric', 'top5=99']) == 0
    card = (out / 'README.md').read_text()
    assert '| top1 | 88.50 |' in card and '| top5 | 99.00 |' in card and '- **Classes:** 3' in card
    assert 'label_names' not in json.loads((out / 'config.json').read_text())


def test_torch_hub_with_weights_and_tags(tmp_path, hub_cache):
    model = _trained('groupnet_small')
    ckpt = _training_checkpoint(model, tmp_path / 'c.pth')
    main(['export', 'groupnet_small', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'e')])
    hub_cache.add('test-org/groupnet-small-digits', {p.name: p for p in (tmp_path / 'e').iterdir()})
    loaded = torch.hub.load(str(ROOT), 'groupnet_small', source='local', pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=dict(hf_hub_id='test-org/groupnet-small-digits', num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # a published tag through torch.hub
    timm_model = timm.create_model('resnet50_gn').eval()
    hub_cache.add_state_dict('timm/resnet50_gn.a1h_in1k', timm_model.state_dict())
    tagged = torch.hub.load(str(ROOT), 'resnext50_1x64d_gn', source='local', pretrained=True,
                            pretrained_cfg='a1h_in1k').eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(tagged(x), timm_model(x), rtol=1e-5, atol=1e-5)


def test_loaded_model_keeps_no_copy_of_the_checkpoint(hub_cache):
    timm_model = timm.create_model('resnet50_gn')
    hub_cache.add_state_dict('timm/resnet50_gn.a1h_in1k', timm_model.state_dict())
    model = timm.create_model('resnext50_1x64d_gn.a1h_in1k', pretrained=True)
    assert 'state_dict' not in model.pretrained_cfg and model.pretrained_cfg['hf_hub_id'] == 'timm/resnet50_gn.a1h_in1k'


def test_corrupted_hub_file_is_named(tmp_path, hub_cache):
    model = _trained('octnet_mini')
    ckpt = _training_checkpoint(model, tmp_path / 'c.pth')
    main(['export', 'octnet_mini', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'e')])
    weights = (tmp_path / 'e' / 'model.safetensors').read_bytes()
    hub_cache.add('test-org/truncated', {'model.safetensors': weights[: len(weights) // 2],
                                        'config.json': (tmp_path / 'e' / 'config.json').read_bytes()})
    with pytest.raises(CheckpointError, match=r'cannot read checkpoint \S*models--test-org--truncated/snapshots/\w+/'
                                              r'model.safetensors \(truncated or not a weights file\?\)'):
        timm.create_model('hf-hub:test-org/truncated', pretrained=True)


@pytest.mark.parametrize('name', FAMILIES)
def test_torch_hub_each_family_with_and_without_weights(tmp_path, hub_cache, name):
    model = _trained(name)
    main(['export', name, '--checkpoint', str(_training_checkpoint(model, tmp_path / 'c.pth')), '--out',
          str(tmp_path / 'e')])
    hub_cache.add(f'test-org/hub-{name}', {p.name: p for p in (tmp_path / 'e').iterdir()})
    overlay = dict(hf_hub_id=f'test-org/hub-{name}', num_classes=10)
    loaded = torch.hub.load(str(ROOT), name, source='local', pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=overlay).eval()
    fresh = torch.hub.load(str(ROOT), name, source='local', num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        assert not torch.allclose(fresh(x), model(x))


def test_unpickling_anything_but_tensors_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': nn.Linear(1, 1)}, path)
    with pytest.raises(CheckpointError, match=f'refusing to unpickle {path}'):
        read_checkpoint(path)


def test_export_errors(tmp_path, capsys):
    model = _trained('octnet_mini')
    ckpt = _training_checkpoint(model, tmp_path / 'c.pth')
    assert main(['export', 'groupnet_small', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'a')]) == 2
    err = capsys.readouterr().err
    assert f'checkpoint {ckpt} does not fit GroupNet' in err and 'missing keys (first: stem.1.conv.weight' in err
    assert not (tmp_path / 'a').exists()
    assert main(['export', 'octnet_mini', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'b'),
                 '--labels', 'a,b,c']) == 2
    assert '3 label names given for a checkpoint with 10 classes' in capsys.readouterr().err
    assert main(['export', 'octnet_mini', '--checkpoint', str(ckpt), '--out', str(tmp_path / 'c'),
                 '--metric', 'top1']) == 2
    assert "--metric takes NAME=VALUE with a number, got 'top1'" in capsys.readouterr().err
