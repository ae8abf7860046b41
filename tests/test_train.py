"""`timm-groupoct train` / `eval` on tiny runs: outputs, resume, the export hand-off, and errors."""
import csv

import pytest
import torch
from PIL import Image

from timm_groupoct.cli import main

TINY = ['--img-size', '8', '-b', '64', '--lr', '5e-3', '--no-progress']


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_train_writes_metrics_curves_and_checkpoints(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', '--model', 'octnet_mini', '--epochs', '2', '--output', str(out)] + TINY) == 0
    printed = capsys.readouterr().out
    assert 'epoch 2/2: train loss' in printed and 'best val top-1' in printed
    assert sorted(p.name for p in out.iterdir()) == ['best.pth', 'curves.png', 'last.pth', 'metrics.csv']
    rows = _rows(out / 'metrics.csv')
    assert [r['epoch'] for r in rows] == ['1', '2']
    assert all(0 <= float(r['val_top1']) <= 100 and float(r['train_loss']) > 0 for r in rows)
    ckpt = torch.load(out / 'last.pth', weights_only=True)
    assert ckpt['epoch'] == 2 and ckpt['arch'] == 'octnet_mini' and ckpt['metric'] == float(rows[-1]['val_top1'])
    assert ckpt['state_dict']['stem.0.conv.weight'].shape[1] == 1  # digits are grey


def test_resume_continues_where_the_last_checkpoint_stopped(tmp_path, capsys):
    straight, part = tmp_path / 'straight', tmp_path / 'part'
    main(['train', '--model', 'octnet_mini', '--epochs', '2', '--output', str(straight)] + TINY)
    # a run that stopped after its first epoch (its last.pth and metrics.csv), resumed to 2 epochs
    main(['train', '--model', 'octnet_mini', '--epochs', '1', '--output', str(part)] + TINY)
    assert torch.load(part / 'last.pth', weights_only=True)['epoch'] == 1
    assert main(['train', '--model', 'octnet_mini', '--epochs', '2', '--output', str(part), '--resume',
                 str(part / 'last.pth')] + TINY) == 0
    assert 'resumed from' in capsys.readouterr().out
    resumed, reference = _rows(part / 'metrics.csv'), _rows(straight / 'metrics.csv')
    assert [r['epoch'] for r in resumed] == ['1', '2']
    assert resumed[0]['train_loss'] == reference[0]['train_loss']  # seeded: the same first epoch
    assert torch.load(part / 'last.pth', weights_only=True)['epoch'] == 2


def test_train_export_eval(tmp_path, capsys):
    out = tmp_path / 'run'
    main(['train', '--model', 'octnet_mini', '--epochs', '1', '--output', str(out)] + TINY)
    folder = out / 'export'
    assert main(['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder)]) == 0
    capsys.readouterr()
    import json
    assert json.loads((folder / 'config.json').read_text())['label_names'] == [str(d) for d in range(10)]
    assert main(['eval', '--model', f'local-dir:{folder}', '--data', 'digits', '--img-size', '8']) == 0
    printed = capsys.readouterr().out
    top1 = float(_rows(out / 'metrics.csv')[0]['val_top1'])
    assert f'on digits (360 images): top-1 {top1:.2f}%' in printed


def _image_folder(root, classes=('cat', 'dog'), per_class=4):
    for split in ('train', 'val'):
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                Image.new('RGB', (20, 20), color=(40 * i + 10 * j, 100, 200)).save(root / split / name / f'{j}.png')
    return root


def test_train_on_an_image_folder(tmp_path, capsys):
    data = _image_folder(tmp_path / 'pets')
    out = tmp_path / 'run'
    assert main(['train', '--model', 'groupnet_small', '--data', str(data), '--epochs', '1', '--img-size', '32',
                 '-b', '4', '--num-classes', '2', '--output', str(out), '--no-progress']) == 0
    assert torch.load(out / 'last.pth', weights_only=True)['label_names'] == ['cat', 'dog']


@pytest.mark.parametrize('args, message', [
    (['--model', 'octnet_minii'], "unknown model 'octnet_minii'"),
    (['--model', 'octnet_mini', '--data', 'NOPE'], 'data folder NOPE does not exist'),
    (['--model', 'octnet_mini', '--num-classes', '7'], '--num-classes 7 does not match the 10 classes of digits'),
    (['--model', 'octnet_mini', '--resume', 'missing.pth'], '--resume checkpoint missing.pth does not exist'),
    (['--model', 'octnet_mini', '--epochs', '0'], '--epochs and --batch-size must be positive'),
])
def test_train_errors(tmp_path, capsys, args, message):
    assert main(['train', '--output', str(tmp_path / 'o'), '--no-progress'] + args) == 2
    assert message in capsys.readouterr().err


def test_train_folder_errors(tmp_path, capsys):
    (tmp_path / 'flat').mkdir()
    assert main(['train', '--model', 'octnet_mini', '--data', str(tmp_path / 'flat'), '--output',
                 str(tmp_path / 'o')]) == 2
    assert 'has no train/ subfolder' in capsys.readouterr().err
    (tmp_path / 'empty' / 'train' / 'a').mkdir(parents=True)
    (tmp_path / 'empty' / 'val' / 'a').mkdir(parents=True)
    assert main(['train', '--model', 'octnet_mini', '--data', str(tmp_path / 'empty'), '--output',
                 str(tmp_path / 'o')]) == 2
    assert 'no images found in' in capsys.readouterr().err
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert main(['train', '--model', 'octnet_mini', '--output', str(blocker / 'sub')]) == 2
    assert f'cannot write to the output folder {blocker / "sub"}' in capsys.readouterr().err


def test_eval_mismatch_is_explained(capsys):
    assert main(['eval', '--model', 'octnet_mini', '--data', 'digits']) == 2
    assert 'octnet_mini takes 3-channel images into 1000 classes; digits has 1-channel images in 10 classes' \
        in capsys.readouterr().err


def test_predict_image_files_with_the_trained_preprocessing(tmp_path, capsys):
    from timm_groupoct.data import save_digit_images
    out = tmp_path / 'run'
    main(['train', '--model', 'octnet_mini', '--epochs', '3', '--output', str(out)] + TINY)
    folder = out / 'export'
    main(['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder)])
    import json
    cfg = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    assert cfg['input_size'] == [1, 8, 8] and cfg['mean'] == [0.5] and cfg['std'] == [0.5]  # how it was trained
    images = save_digit_images(tmp_path / 'samples', 4)
    capsys.readouterr()
    assert main(['predict', '--model', f'local-dir:{folder}', '--top-k', '2'] + [str(p) for p in images]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    labels = [int(p.stem.split('label')[1]) for p in images]
    top = [int(line.split(': ')[1].split()[0]) for line in lines]
    probs = [float(line.split(': ')[1].split()[1].rstrip('%,')) for line in lines]
    assert all(0 < p <= 100 for p in probs)
    assert sum(t == y for t, y in zip(top, labels)) >= 3  # a 3-epoch model on 8 px digits
    # the same predictions as the model on the dataset's own tensors
    import timm
    from timm_groupoct.data import digits_datasets
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    _, val = digits_datasets(img_size=8)
    with torch.no_grad():
        expected = model(torch.stack([val[i][0] for i in range(4)])).argmax(1).tolist()
    assert top == expected


def test_predict_errors(tmp_path, capsys):
    assert main(['predict', '--model', 'octnet_mini', str(tmp_path / 'nope.png')]) == 2
    assert 'no such image file' in capsys.readouterr().err
    bad = tmp_path / 'bad.png'
    bad.write_text('not an image')
    assert main(['predict', '--model', 'octnet_mini', str(bad)]) == 2
    assert f'cannot read image {bad}' in capsys.readouterr().err


def test_predict_uses_imagenet_names_for_1000_classes(tmp_path, capsys):
    image = tmp_path / 'x.png'
    Image.new('RGB', (40, 40), color=(10, 120, 30)).save(image)
    assert main(['predict', '--model', 'octnet_mini', '--top-k', '1', str(image)]) == 0
    name = capsys.readouterr().out.split(': ')[1].rsplit(' ', 1)[0]
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    assert name in {info.index_to_description(i) for i in range(1000)}
