"""YAML recipes (`--config`): the shipped ones, timm train.py's keys, precedence, and errors."""
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

from timm_groupoct.cli import main
from timm_groupoct.cli._common import CLIError
from timm_groupoct.cli.train import load_recipe
from timm_groupoct.train import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'configs').glob('*.yaml'))


def test_one_recipe_per_family_at_least():
    from timm_groupoct import FAMILY_MODULES
    archs = {timm.models.get_arch_name(load_recipe(str(c))['model']) for c in CONFIGS}
    assert all(archs & set(timm.list_models(module=family)) for family in FAMILY_MODULES)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_shipped_recipe_is_a_valid_config(path):
    settings = load_recipe(str(path))
    cfg = TrainConfig(**settings)
    assert timm.is_model(cfg.model)
    source, _ = cfg.data_source()
    assert source == 'digits' or source.startswith('torch/') or cfg.data_dir
    assert cfg.epochs >= 10 and cfg.resolved_lr() > 0


def test_digits_recipe_runs_and_flags_override_it(tmp_path):
    out = tmp_path / 'run'
    recipe = Path(__file__).resolve().parents[1] / 'configs' / 'octnet_mini-digits.yaml'
    assert main(['train', '--config', str(recipe), '--epochs', '1', '--img-size', '8', '--output', str(out),
                 '--no-progress']) == 0
    args = torch.load(out / 'last.pth', weights_only=True)['args']
    assert (args['epochs'], args['img_size']) == (1, 8)  # from the flags
    assert (args['lr'], args['batch_size'], args['opt']) == (5e-3, 32, 'adamw')  # from the recipe


def _timm_args_yaml(tmp_path, **changes):
    """An args.yaml as timm's train.py writes it: every option, at its default unless changed."""
    defaults = json.loads((Path(__file__).resolve().parents[1] / 'timm_groupoct' / 'cli' /
                           'timm_train_defaults.json').read_text())['defaults']
    path = tmp_path / 'args.yaml'
    path.write_text(yaml.safe_dump(dict(defaults, **changes)))
    return str(path)


def test_a_timm_train_args_yaml_carries_over(tmp_path):
    settings = load_recipe(_timm_args_yaml(tmp_path, model='octnet_mini', epochs=3, log_interval=10))
    cfg = TrainConfig(**settings)
    assert (cfg.model, cfg.epochs, cfg.opt, cfg.batch_size, cfg.smoothing) == ('octnet_mini', 3, 'sgd', 128, 0.1)
    assert cfg.output == 'output/train' and cfg.resume is None  # timm's '' = unset
    assert cfg.lr is None and cfg.resolved_lr() == pytest.approx(0.1 * 128 / 256)  # timm's lr_base rule
    assert cfg.resolved_lr(world_size=4) == pytest.approx(0.1 * 512 / 256)
    assert TrainConfig(model='x', lr=None, opt='adamw', batch_size=64).resolved_lr() == pytest.approx(0.1 * 0.5)


@pytest.mark.parametrize('text, message', [
    ('model: octnet_mini\nlearning_rate: 0.1\n', 'unknown key(s) learning_rate'),
    ('model: octnet_mini\ngrad_accum_steps: 4\njsd_loss: true\n',
     'does not implement, set away from their defaults: grad_accum_steps=4, jsd_loss=True'),
    ('model: octnet_mini\nlr: fast\n', 'lr: \'fast\' is not a float'),
    ('model: octnet_mini\nepochs: null\n', 'epochs: None is not an int'),
    ('model: octnet_mini\namp: "yes"\n', "amp: 'yes' is not a bool"),
    ('model: octnet_mini\ndecay_milestones: [10, x]\n', 'is not a list of int'),
    ('- model\n', 'must be a mapping of option names to values'),
    ('model: [unclosed\n', 'is not valid YAML'),
])
def test_recipe_errors(tmp_path, text, message):
    path = tmp_path / 'recipe.yaml'
    path.write_text(text)
    with pytest.raises(CLIError) as e:
        load_recipe(str(path))
    assert message in str(e.value)


def test_recipe_values_are_typed_like_flags(tmp_path):
    path = tmp_path / 'recipe.yaml'
    path.write_text('model: octnet_mini\nlr: 1e-3\ndecay_milestones: ["30", 60]\nscale: [0.5, 1]\n')
    settings = load_recipe(str(path))  # YAML 1.1 reads 1e-3 as a string
    assert settings['lr'] == 1e-3 and settings['decay_milestones'] == [30, 60] and settings['scale'] == [0.5, 1.0]


def test_cli_reports_recipe_problems(tmp_path, capsys):
    assert main(['train', '--config', str(tmp_path / 'missing.yaml')]) == 2
    assert 'cannot read --config' in capsys.readouterr().err
    (tmp_path / 'empty.yaml').write_text('epochs: 1\n')
    assert main(['train', '--config', str(tmp_path / 'empty.yaml')]) == 2
    assert 'no model: give --model NAME or a recipe with `model: NAME`' in capsys.readouterr().err


def test_finetune_recipe_linear_probe_from_hub_weights(tmp_path, hub_cache):
    from helpers import image_folder
    hub_cache.add_state_dict('timm/resnet50_gn.a1h_in1k', timm.create_model('resnet50_gn').state_dict())
    data = image_folder(tmp_path / 'pets')
    out = tmp_path / 'run'
    recipe = Path(__file__).resolve().parents[1] / 'configs' / 'resnext50_1x64d_gn-finetune.yaml'
    assert main(['train', '--config', str(recipe), '--data-dir', str(data), '--freeze-backbone', '--epochs', '1',
                 '--img-size', '32', '-b', '4', '--output', str(out), '--no-progress']) == 0
    ckpt = torch.load(out / 'last.pth', weights_only=True)
    pretrained = timm.create_model('resnext50_1x64d_gn.a1h_in1k', pretrained=True, num_classes=2).state_dict()
    for weights in (ckpt['state_dict'], ckpt['state_dict_ema']):  # the recipe keeps an EMA
        assert all(torch.equal(weights[k], v) for k, v in pretrained.items() if not k.startswith('fc.'))
    assert not torch.equal(ckpt['state_dict']['fc.weight'], pretrained['fc.weight'])
    assert ckpt['args']['layer_decay'] == 0.75 and ckpt['label_names'] == ['cat', 'dog']


def test_every_train_flag_is_a_config_field_and_back():
    import dataclasses
    from timm_groupoct.cli import build_parser
    train_parser = build_parser()._subparsers._group_actions[0].choices['train']
    dests = {a.dest for a in train_parser._actions} - {'help', 'config', 'no_progress'}
    assert dests == {f.name for f in dataclasses.fields(TrainConfig)}
