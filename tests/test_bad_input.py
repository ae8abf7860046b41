"""Nothing lost, nothing silently wrong: outputs that are never replaced without --overwrite, a best.pth that
survives interruptions, exact resumes, and clear errors for bad data, weights, flags and checkpoints."""
import argparse
import json
import math
import os
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import timm_groupoct  # noqa: F401
from helpers import TINY, image_folder
from timm_groupoct.cli import main


def _train(out, *args, epochs=1):
    return main(['train', '--model', 'octnet_mini', '--epochs', str(epochs), '--output', str(out)] + TINY
                + list(args))


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


# -- nothing a user made is replaced without asking

def test_train_refuses_an_output_folder_that_holds_a_run(tmp_path, capsys):
    out = tmp_path / 'run'
    assert _train(out) == 0
    before = _snapshot(out)
    assert _train(out) == 2
    assert (f'--output {out} holds a previous run (metrics.csv, curves.png, last.pth, best.pth): continue it with '
            f'--resume {out / "last.pth"}, write to a new --output folder, or pass --overwrite') \
        in capsys.readouterr().err
    assert _snapshot(out) == before
    assert _train(out, '--overwrite', '--seed', '1') == 0
    assert torch.load(out / 'last.pth', weights_only=True)['args']['seed'] == 1
    # continuing the run in its own folder is what --resume is for
    assert _train(out, '--resume', str(out / 'last.pth'), epochs=2) == 0


def test_a_resume_from_another_folder_does_not_replace_this_one(tmp_path, capsys):
    first, second = tmp_path / 'first', tmp_path / 'second'
    assert _train(first) == 0 and _train(second) == 0
    before = _snapshot(second)
    assert _train(second, '--resume', str(first / 'last.pth'), epochs=2) == 2
    assert f'--output {second} holds a previous run' in capsys.readouterr().err
    assert _snapshot(second) == before


@pytest.mark.parametrize('command', ['export', 'convert'])
def test_export_and_convert_refuse_a_folder_that_holds_an_export(tmp_path, capsys, command):
    weights = tmp_path / 'w.safetensors'
    save_file(timm.create_model('octnet_mini', num_classes=10, in_chans=1).state_dict(), weights)
    out = tmp_path / 'folder'
    argv = (['export', 'octnet_mini', '--checkpoint', str(weights), '--out', str(out)] if command == 'export' else
            ['convert', 'octnet_mini', str(weights), '--out', str(out)])
    assert main(argv) == 0
    (out / 'README.md').write_text('my notes')
    before = _snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f'{out} already holds model.safetensors, config.json, README.md (another export?)' in err
    assert 'choose a new output folder, or pass --overwrite' in err
    assert _snapshot(out) == before
    assert main(argv + ['--overwrite']) == 0
    assert (out / 'README.md').read_text() != 'my notes' or command == 'convert'


# -- best.pth survives any interruption

def test_best_checkpoint_is_in_place_before_the_last_one_moves_on(tmp_path, monkeypatch):
    import timm_groupoct.train as train_module
    real_replace = os.replace

    def interrupted_replace(src, dst):
        if Path(dst).name == 'last.pth':  # Ctrl-C as the first last.pth is about to appear
            raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(train_module.os, 'replace', interrupted_replace)
    out = tmp_path / 'run'
    with pytest.raises(KeyboardInterrupt):
        from timm_groupoct.train import TrainConfig, train
        train(TrainConfig(model='octnet_mini', epochs=1, img_size=8, batch_size=64, output=str(out)), progress=False,
              log=lambda *a: None)
    assert torch.load(out / 'best.pth', weights_only=True)['epoch'] == 1
    assert not (out / 'last.pth').exists() and not list(out.glob('*.tmp'))


def test_resume_restores_a_missing_best_checkpoint(tmp_path, capsys):
    out = tmp_path / 'run'
    assert _train(out) == 0
    (out / 'best.pth').unlink()  # as an interruption between the two writes of an older version left it
    assert _train(out, '--resume', str(out / 'last.pth'), epochs=1) == 0
    assert f'restored the missing {out / "best.pth"} from {out / "last.pth"} (epoch 1, the best so far)' \
        in capsys.readouterr().out
    assert torch.load(out / 'best.pth', weights_only=True)['epoch'] == 1


# -- resume is exact

def test_a_resumed_run_equals_an_uninterrupted_one_with_dropout_drop_path_mixup_and_augmentation(tmp_path):
    data = image_folder(tmp_path / 'pets', per_class=8)
    flags = ['--model', 'groupnet_small', '--data', str(data), '--img-size', '16', '-b', '4', '--drop', '0.3',
             '--drop-path', '0.2', '--mixup', '0.4', '--hflip', '0.5', '--color-jitter', '0.4', '--no-progress']
    straight, part = tmp_path / 'straight', tmp_path / 'part'
    assert main(['train', '--epochs', '2', '--output', str(straight)] + flags) == 0
    assert main(['train', '--epochs', '1', '--output', str(part)] + flags) == 0
    assert main(['train', '--epochs', '2', '--output', str(part), '--resume', str(part / 'last.pth')] + flags) == 0
    a = torch.load(straight / 'last.pth', weights_only=True)
    b = torch.load(part / 'last.pth', weights_only=True)
    timing = 'train_images_per_s'
    assert [{k: v for k, v in r.items() if k != timing} for r in a['metrics']] == \
        [{k: v for k, v in r.items() if k != timing} for r in b['metrics']]
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key


def test_resume_checks_the_run_it_continues(tmp_path, capsys):
    out = tmp_path / 'run'
    assert _train(out) == 0
    last = str(out / 'last.pth')
    assert main(['train', '--model', 'groupnet_small', '--epochs', '2', '--output', str(out), '--resume', last]
                + TINY) == 2
    assert f'--resume {last} is a run of octnet_mini, not of --model groupnet_small' in capsys.readouterr().err
    assert _train(out, '--resume', last, '--model-ema', epochs=2) == 2
    assert f'--resume {last} was trained without --model-ema: resume with --no-model-ema' in capsys.readouterr().err
    assert torch.load(last, weights_only=True)['epoch'] == 1  # nothing was trained


def test_resume_of_a_timm_train_checkpoint_explains_itself(tmp_path, capsys):
    timm_checkpoint = tmp_path / 'timm.pth.tar'  # what timm's train.py writes: args as an argparse.Namespace
    torch.save(dict(epoch=3, arch='octnet_mini', state_dict=timm.create_model('octnet_mini').state_dict(),
                    optimizer={}, args=argparse.Namespace(lr=0.1)), timm_checkpoint)
    assert _train(tmp_path / 'run', '--resume', str(timm_checkpoint), epochs=4) == 2
    assert f'--resume {timm_checkpoint} is not a last.pth of `timm-groupoct train` (it lacks best_metric, metrics)' \
        in capsys.readouterr().err


# -- silently wrong no more

def test_validation_classes_are_labelled_as_the_training_classes(tmp_path):
    from timm_groupoct.data import DataError, load_data
    data = image_folder(tmp_path / 'three', classes=('cat', 'dog', 'fox'), splits=('train',))
    image_folder(data, classes=('dog', 'fox'), splits=('val',))  # no validation cats
    loaded = load_data(str(data), 'groupnet_small', 16)
    assert loaded.class_names == ['cat', 'dog', 'fox']
    assert sorted({int(y) for _, y in loaded.val}) == [1, 2]
    other = image_folder(tmp_path / 'other', classes=('cat', 'dog'), splits=('train',))
    image_folder(other, classes=('cat', 'dog', 'emu'), splits=('val',))
    with pytest.raises(DataError, match=r'has images of classes that .*train has none of: emu'):
        load_data(str(other), 'groupnet_small', 16)


def test_an_image_folder_of_corrupt_files_is_a_clear_error(tmp_path, capsys):
    data = image_folder(tmp_path / 'bad')
    for path in data.rglob('*.png'):
        path.write_bytes(b'not an image')
    assert main(['train', '--model', 'groupnet_small', '--data', str(data), '--output', str(tmp_path / 'o')]) == 2
    assert f'cannot decode the training images of {data} (' in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--clip-grad', '-10'], '--clip-grad must be positive, got -10.0 (leave it out for the default: no clipping)'),
    (['--img-size', '0'], "--img-size must be positive, got 0 (leave it out for the default: the model's input"),
    (['--mixup', '0.2', '--mixup-mode', 'bogus'], "--mixup-mode must be one of batch, pair, elem, got 'bogus'"),
    (['--smoothing', '1.5'], '--smoothing must be in [0, 1)'),
    (['--drop', '1'], '--drop must be in [0, 1), got 1.0'),
    (['--mixup-prob', '2'], '--mixup-prob must be in [0, 1], got 2.0'),
    (['--cutmix', '-1'], '--mixup and --cutmix are Beta-distribution alphas'),
])
def test_bad_training_values_are_refused(tmp_path, capsys, args, message):
    assert _train(tmp_path / 'o', *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('value, kind', [('1.5', 'an int'), ('true', 'an int')])
def test_a_recipe_number_is_not_truncated_or_taken_from_a_boolean(tmp_path, capsys, value, kind):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(f'model: octnet_mini\nepochs: {value}\n')
    assert main(['train', '--config', str(recipe), '--output', str(tmp_path / 'o')]) == 2
    assert f'epochs: {1.5 if value == "1.5" else True!r} is not {kind}' in capsys.readouterr().err


def test_a_checkpoint_classifier_that_fits_is_kept(tmp_path):
    trained = timm.create_model('octnet_mini', num_classes=10)
    save_file(trained.state_dict(), tmp_path / 'ten.safetensors')
    loaded = timm.create_model('octnet_mini', pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(file=str(tmp_path / 'ten.safetensors')))
    assert torch.equal(loaded.fc.weight, trained.fc.weight) and torch.equal(loaded.fc.bias, trained.fc.bias)
    other = timm.create_model('octnet_mini', pretrained=True, num_classes=4,  # fine-tuning: a new head
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'ten.safetensors')))
    assert other.fc.weight.shape == (4, 128)


def test_integer_tensors_are_not_cast_into_float_parameters(tmp_path):
    from timm_groupoct.hub import CheckpointError
    state = timm.create_model('octnet_mini').state_dict()
    state['stem.0.conv.weight'] = torch.ones_like(state['stem.0.conv.weight'], dtype=torch.int32)
    save_file(state, tmp_path / 'ints.safetensors')
    with pytest.raises(CheckpointError, match=r'1 dtype mismatches \(integer or bool against floating point\) '
                                              r'\(first: stem.0.conv.weight: torch.int32 in the file'):
        timm.create_model('octnet_mini', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'ints.safetensors')))


def test_convert_fails_on_nan_weights(tmp_path, capsys):
    state = timm.create_model('octnet_mini').state_dict()
    state['fc.weight'][0, 0] = math.nan
    save_file(state, tmp_path / 'nan.safetensors')
    assert main(['convert', 'octnet_mini', str(tmp_path / 'nan.safetensors'), '--out', str(tmp_path / 'o')]) == 2
    assert 'converts to a model with non-finite outputs: its weights hold NaN or inf (first: fc.weight)' \
        in capsys.readouterr().err


# -- eval / predict / info: one loading path, clear errors

@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """An exported 10-class grey-digit folder, and broken copies of it."""
    import shutil
    root = tmp_path_factory.mktemp('folders')
    save_file(timm.create_model('octnet_mini', num_classes=10, in_chans=1).state_dict(), root / 'w.safetensors')
    assert main(['export', 'octnet_mini', '--checkpoint', str(root / 'w.safetensors'), '--out', str(root / 'good'),
                 '--labels', ','.join('abcdefghij')]) == 0
    for name in ('noconfig', 'badjson', 'classes', 'labels'):
        shutil.copytree(root / 'good', root / name)
    (root / 'noconfig' / 'config.json').unlink()
    (root / 'badjson' / 'config.json').write_text('{"architecture": ')
    config = root / 'classes' / 'config.json'
    config.write_text(config.read_text().replace('"num_classes": 10', '"num_classes": 7'))
    config = root / 'labels' / 'config.json'
    config.write_text(json.dumps(dict(json.loads(config.read_text()), label_names=list('abcdefghi'))))
    Image.new('L', (8, 8), color=100).save(root / 'digit.png')
    return root


@pytest.mark.parametrize('command', ['eval', 'predict'])
@pytest.mark.parametrize('folder, message', [
    ('noconfig', 'has no config.json: it is not a folder that `timm-groupoct export` or timm wrote'),
    ('badjson', 'config.json is not valid JSON'),
    ('classes', 'its config.json says num_classes=7, but its weights have a 10-class classifier (fc.weight)'),
    ('nowhere', ': no such folder'),
])
def test_eval_and_predict_of_a_broken_folder_say_what_is_wrong(folders, capsys, command, folder, message):
    argv = [command, '--model', f'local-dir:{folders / folder}'] + ([str(folders / 'digit.png')]
                                                                     if command == 'predict' else [])
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_label_names_that_do_not_cover_the_classes_are_an_error(folders, capsys):
    assert main(['predict', '--model', f'local-dir:{folders / "labels"}', str(folders / 'digit.png')]) == 2
    assert 'the model has 10 classes but 9 label names' in capsys.readouterr().err


@pytest.mark.parametrize('command', ['eval', 'predict', 'info'])
def test_a_hub_repo_not_in_the_offline_cache_is_a_clear_error(capsys, monkeypatch, command, folders, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path))
    name = 'hf-hub:nobody/nothing'
    argv = {'eval': ['eval', '--model', name], 'predict': ['predict', '--model', name, str(folders / 'digit.png')],
            'info': ['info', name]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f'cannot load {name}: LocalEntryNotFoundError' in err and 'HF_HUB_OFFLINE is set' in err


@pytest.mark.parametrize('argv, message', [
    (['predict', '--top-k', '-1'], 'argument --top-k: must be a positive integer, got -1'),
    (['predict', '--img-size', '-4'], 'argument --img-size: must be a positive integer, got -4'),
    (['eval', '-b', '0'], 'argument -b/--batch-size: must be a positive integer, got 0'),
    (['eval', '--img-size', 'x'], "argument --img-size: 'x' is not an integer"),
])
def test_bad_numbers_on_the_command_line(folders, capsys, argv, message):
    extra = [str(folders / 'digit.png')] if argv[0] == 'predict' else []
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ['--model', f'local-dir:{folders / "good"}'] + extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
