"""`timm-groupoct train` / `eval` on tiny runs: outputs, resume, the export hand-off, and errors."""
import csv
import re

import pytest
import torch
from PIL import Image

from helpers import TINY, image_folder
from timm_groupoct.cli import main



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
    # weights, optimizer state, schedule and the per-epoch batch order carry over: the same run as uninterrupted
    for key in ('train_loss', 'val_loss', 'val_top1'):
        assert [float(r[key]) for r in resumed] == pytest.approx([float(r[key]) for r in reference], rel=1e-5)
    assert torch.load(part / 'last.pth', weights_only=True)['epoch'] == 2


def test_train_export_eval(tmp_path, capsys, monkeypatch):
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
    # --channels-last: the model runs in that format and computes the same
    models = _record_created_models(monkeypatch)
    assert main(['eval', '--model', f'local-dir:{folder}', '--data', 'digits', '--img-size', '8',
                 '--channels-last']) == 0
    assert f'on digits (360 images): top-1 {top1:.2f}%' in capsys.readouterr().out
    assert _is_channels_last(models[-1])
    # --reparam: batch norms folded into the convs, the same metrics
    assert main(['eval', '--model', f'local-dir:{folder}', '--data', 'digits', '--img-size', '8', '--reparam']) == 0
    folded = capsys.readouterr().out
    assert f'on digits (360 images): top-1 {top1:.2f}%' in folded
    assert _loss(folded) == pytest.approx(_loss(printed), abs=2e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models[-1].modules())


def _loss(printed):
    return float(re.search(r'loss (\d+\.\d+)', printed)[1])


def _record_created_models(monkeypatch):
    import timm
    created, create = [], timm.create_model
    monkeypatch.setattr(timm, 'create_model', lambda *a, **k: created.append(create(*a, **k)) or created[-1])
    return created


def _is_channels_last(model):
    weights = [p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    return weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def test_fine_tune_from_an_exported_folder(tmp_path, capsys):
    first = tmp_path / 'first'
    main(['train', '--model', 'octnet_mini', '--epochs', '3', '--output', str(first)] + TINY)
    main(['export', 'octnet_mini', '--checkpoint', str(first / 'best.pth'), '--out', str(tmp_path / 'export')])
    trained_top1 = torch.load(first / 'best.pth', weights_only=True)['metric']
    capsys.readouterr()
    # continue from the exported weights with a small learning rate: it starts where the first run ended
    assert main(['train', '--model', f'local-dir:{tmp_path / "export"}', '--pretrained', '--epochs', '1',
                 '--lr', '1e-4', '--output', str(tmp_path / 'ft'), '-b', '64', '--no-progress']) == 0
    tuned = torch.load(tmp_path / 'ft' / 'last.pth', weights_only=True)
    tuned_top1 = tuned['metric']
    assert tuned['data_config']['input_size'] == (1, 8, 8)  # the exported model's digits size, not the default 32
    assert trained_top1 > 80 and tuned_top1 >= trained_top1 - 5
    assert main(['train', '--model', f'local-dir:{tmp_path / "nowhere"}', '--data', str(image_folder(tmp_path / 'p')),
                 '--output', str(tmp_path / 'x')]) == 2
    assert f'cannot read the config of local-dir:{tmp_path / "nowhere"}' in capsys.readouterr().err


def test_train_on_animage_folder(tmp_path, capsys):
    data = image_folder(tmp_path / 'pets')
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
    (['--model', 'octnet_mini', '--mixup', '0.2', '-b', '7'], '--batch-size must be even, got 7'),
    (['--model', 'octnet_mini', '--aa', 'rand-m9'], 'image augmentations do not apply to them: drop auto_augment'),
    (['--model', 'octnet_mini', '--data', 'digits', '--dataset', 'torch/mnist'], 'name two data sources'),
    (['--model', 'octnet_mini', '-b', '2000'], '--batch-size 2000 x 1 processes is larger than the 1437'),
    (['--model', 'octnet_mini', '--pretrained'], "No pretrained weights are published for 'octnet_mini'"),
    pytest.param(['--model', 'octnet_mini', '--device', 'cuda'], 'CUDA is not available on this machine',
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')),
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


def test_resume_needs_a_training_checkpoint(tmp_path, capsys):
    weights = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'fc.weight': torch.zeros(1)}}, weights)
    assert main(['train', '--model', 'octnet_mini', '--resume', str(weights), '--output', str(tmp_path / 'o')]) == 2
    assert f'--resume {weights} is not a last.pth of `timm-groupoct train` (it lacks optimizer, epoch' \
        in capsys.readouterr().err
    (tmp_path / 'cut.pth').write_bytes(b'PK\x03\x04 truncated')
    assert main(['train', '--model', 'octnet_mini', '--resume', str(tmp_path / 'cut.pth'), '--output',
                 str(tmp_path / 'o')]) == 2
    assert f'cannot read --resume checkpoint {tmp_path / "cut.pth"}' in capsys.readouterr().err


def test_eval_mismatch_is_explained(capsys):
    assert main(['eval', '--model', 'octnet_mini', '--data', 'digits']) == 2
    assert 'octnet_mini takes 3-channel images into 1000 classes; digits has 1-channel images in 10 classes' \
        in capsys.readouterr().err


def test_predict_image_files_with_the_trained_preprocessing(tmp_path, capsys, monkeypatch):
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
    models = _record_created_models(monkeypatch)
    assert main(['predict', '--model', f'local-dir:{folder}', '--top-k', '2', '--channels-last', '--reparam']
                + [str(p) for p in images]) == 0
    assert _is_channels_last(models[-1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models[-1].modules())
    assert [line.split(': ')[1].split()[0] for line in capsys.readouterr().out.splitlines()] == [str(t) for t in top]
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


def _train_cfg(tmp_path, **kwargs):
    from timm_groupoct.train import TrainConfig
    return TrainConfig(**dict(dict(model='octnet_mini', img_size=8, epochs=1, batch_size=64, lr=5e-3,
                                   output=str(tmp_path / 'run')), **kwargs))


def test_mixup_cutmix_and_label_smoothing_use_timms_losses(tmp_path):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm_groupoct.train import _losses, train
    mixup, loss = _losses(_train_cfg(tmp_path, mixup=0.2, cutmix=1.0, smoothing=0.1), 10)
    assert isinstance(mixup, Mixup) and isinstance(loss, SoftTargetCrossEntropy)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.label_smoothing) == (0.2, 1.0, 0.1)
    mixup, loss = _losses(_train_cfg(tmp_path, smoothing=0.1), 10)
    assert mixup is None and isinstance(loss, LabelSmoothingCrossEntropy) and loss.smoothing == 0.1
    result = train(_train_cfg(tmp_path, mixup=0.2, cutmix=1.0, smoothing=0.1), progress=False, log=lambda *a: None)
    assert result['epochs'] == 1 and 0 <= result['final']['top1'] <= 100


def test_model_ema_is_evaluated_checkpointed_and_exported(tmp_path, capsys):
    out = tmp_path / 'run'
    assert main(['train', '--model', 'octnet_mini', '--epochs', '2', '--model-ema', '--model-ema-decay', '0.9',
                 '--output', str(out)] + TINY) == 0
    assert 'EMA val top-1' in capsys.readouterr().out
    rows = _rows(out / 'metrics.csv')
    ckpt = torch.load(out / 'last.pth', weights_only=True)
    assert ckpt['metric'] == float(rows[-1]['ema_val_top1'])  # as timm's train.py: the EMA's metric
    ema, raw = ckpt['state_dict_ema'], ckpt['state_dict']
    assert ema.keys() == raw.keys() and not torch.equal(ema['fc.weight'], raw['fc.weight'])
    main(['export', 'octnet_mini', '--checkpoint', str(out / 'last.pth'), '--out', str(out / 'export')])
    from safetensors.torch import load_file
    exported = load_file(out / 'export' / 'model.safetensors')
    assert all(torch.equal(exported[k], ema[k]) for k in exported)


def test_amp_runs_forward_passes_under_autocast(tmp_path, monkeypatch):
    import timm_groupoct.train as train_module
    dtypes = []
    real_autocast = torch.autocast

    def recording_autocast(device_type, dtype=None, **kwargs):
        dtypes.append(dtype)
        return real_autocast(device_type, dtype=dtype, **kwargs)
    monkeypatch.setattr(train_module.torch, 'autocast', recording_autocast)
    train_module.train(_train_cfg(tmp_path, amp=True, amp_dtype='bfloat16'), progress=False, log=lambda *a: None)
    steps = 1437 // 64
    assert dtypes.count(torch.bfloat16) >= steps  # every training step, plus the validation batches
    with pytest.raises(train_module.TrainError, match='--amp-dtype float8 is not one of float16, bfloat16'):
        train_module.train(_train_cfg(tmp_path, amp=True, amp_dtype='float8'))


def test_layer_decay_scales_lr_per_group_matcher_block(tmp_path):
    from timm_groupoct.train import train
    train(_train_cfg(tmp_path, layer_decay=0.5), progress=False, log=lambda *a: None)
    groups = torch.load(tmp_path / 'run' / 'last.pth', weights_only=True)['optimizer']['param_groups']
    scales = sorted({g['lr_scale'] for g in groups})
    # octnet_mini's group_matcher (fine): stem, stages.0.0, stages.1.0, then the head -> scales 0.5^3 .. 1
    assert scales == pytest.approx([0.125, 0.25, 0.5, 1.0])


def test_freeze_backbone_trains_only_the_head(tmp_path):
    import timm
    from timm.utils import random_seed
    from timm_groupoct.train import freeze_backbone, train
    model = timm.create_model('groupnet_small', num_classes=10)
    eval_modules = freeze_backbone(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ['fc.weight', 'fc.bias']
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in eval_modules)

    train(_train_cfg(tmp_path, model='groupnet_small', freeze_backbone=True, lr=1e-2), progress=False,
          log=lambda *a: None)
    trained = torch.load(tmp_path / 'run' / 'last.pth', weights_only=True)['state_dict']
    random_seed(0, 0)  # as train() seeds before building the model
    initial = timm.create_model('groupnet_small', num_classes=10, in_chans=1).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert changed == {'fc.weight', 'fc.bias'}  # backbone weights and BatchNorm running statistics untouched


def _fake_mnist(root, n=64):
    """torchvision's MNIST files (idx format) with `n` random images per split: no download."""
    import struct
    raw = root / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix in ('train', 't10k'):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        (raw / f'{prefix}-images-idx3-ubyte').write_bytes(struct.pack('>IIII', 2051, n, 28, 28) +
                                                           images.numpy().tobytes())
        (raw / f'{prefix}-labels-idx1-ubyte').write_bytes(struct.pack('>II', 2049, n) + labels.numpy().tobytes())
    return root


def test_train_on_a_torchvision_dataset(tmp_path, capsys):
    root = _fake_mnist(tmp_path / 'mnist')
    out = tmp_path / 'run'
    assert main(['train', '--model', 'octnet_mini', '--data', 'torch/mnist', '--data-dir', str(root), '--epochs',
                 '1', '--img-size', '16', '-b', '16', '--output', str(out), '--no-progress']) == 0
    ckpt = torch.load(out / 'last.pth', weights_only=True)
    assert ckpt['label_names'][:2] == ['0 - zero', '1 - one'] and len(ckpt['label_names']) == 10
    assert ckpt['data_config']['input_size'] == (1, 16, 16)  # MNIST decodes to grey images: a 1-channel model
    assert ckpt['state_dict']['stem.0.conv.weight'].shape[1] == 1
    assert main(['train', '--model', 'octnet_mini', '--data', 'torch/mnist', '--output', str(tmp_path / 'o')]) == 2
    assert 'torch/mnist needs --data-dir' in capsys.readouterr().err
    assert main(['train', '--model', 'octnet_mini', '--data', 'torch/cifar10', '--data-dir', str(root),
                 '--output', str(tmp_path / 'o')]) == 2
    assert 'cannot load the train split of torch/cifar10' in capsys.readouterr().err


def test_train_on_a_hugging_face_dataset(tmp_path):
    pytest.importorskip('datasets')
    data = tmp_path / 'pets'
    image_folder(data)
    (data / 'val').rename(data / 'validation')  # the split names HF datasets' imagefolder knows
    out = tmp_path / 'run'
    assert main(['train', '--model', 'groupnet_small', '--data', f'hfds/{data}', '--data-dir', str(tmp_path / 'c'),
                 '--epochs', '1', '--img-size', '32', '-b', '4', '--output', str(out), '--no-progress']) == 0
    assert torch.load(out / 'last.pth', weights_only=True)['label_names'] == ['cat', 'dog']


def test_interrupted_run_keeps_its_last_checkpoint_and_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'timm_groupoct.cli', 'train', '--model', 'octnet_mini', '--output', str(out)] + TINY
    proc = subprocess.Popen(cmd + ['--epochs', '200'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / 'last.pth').exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # into a later epoch, maybe mid-save
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f'interrupted: the last complete checkpoint is {out / "last.pth"}' in err
    done = torch.load(out / 'last.pth', weights_only=True)['epoch']
    assert 1 <= done < 200 and len(_rows(out / 'metrics.csv')) >= done
    assert not list(out.glob('*.tmp'))  # a save cut short removes its temporary file
    resumed = subprocess.run(cmd + ['--epochs', str(done + 1), '--resume', str(out / 'last.pth')],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f'resumed from {out / "last.pth"} at epoch {done}' in resumed.stdout
    assert [int(r['epoch']) for r in _rows(out / 'metrics.csv')] == list(range(1, done + 2))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    from timm_groupoct.train import _replacing
    path = tmp_path / 'last.pth'
    path.write_text('old')
    with pytest.raises(OSError, match='disk full'):
        with _replacing(path) as tmp:
            tmp.write_text('half')
            raise OSError('disk full')
    assert path.read_text() == 'old' and list(tmp_path.iterdir()) == [path]
    with _replacing(path) as tmp:
        tmp.write_text('new')
    assert path.read_text() == 'new' and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize('fmt, runtimes', [('onnx', ['onnxruntime', 'openvino']), ('openvino', ['openvino'])])
def test_export_a_runtime_file_then_eval_and_predict_with_it(tmp_path, capsys, fmt, runtimes):
    import json
    from timm_groupoct.data import save_digit_images
    out = tmp_path / 'run'
    main(['train', '--model', 'octnet_mini', '--epochs', '1', '--output', str(out)] + TINY)
    folder = out / 'export'
    capsys.readouterr()
    assert main(['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder),
                 '--format', fmt]) == 0
    printed = capsys.readouterr().out
    spec = json.loads((folder / 'runtime.json').read_text())
    file = {'onnx': 'model.onnx', 'openvino': 'openvino_model.xml'}[fmt]
    assert re.search(rf'wrote {re.escape(str(folder / file))} \(\w+, 8x8, any batch\) .* max abs diff \S+', printed)
    # the input spec is the trained one (config.json), not the architecture's default
    assert spec['input_size'] == [1, 8, 8] and spec['mean'] == [0.5] and spec['std'] == [0.5]
    assert spec['file'] == file and spec['dynamic_batch'] and not spec['dynamic_size']
    assert spec['max_abs_diff'] <= 1e-4
    images = [str(p) for p in save_digit_images(tmp_path / 'samples', 3)]
    assert main(['eval', '--model', f'local-dir:{folder}', '--data', 'digits']) == 0
    assert main(['predict', '--model', f'local-dir:{folder}', '--top-k', '1'] + images) == 0
    eager = capsys.readouterr().out.splitlines()
    for runtime in runtimes:
        assert main(['eval', '--model', f'local-dir:{folder}', '--data', 'digits', '--runtime', runtime]) == 0
        assert main(['predict', '--model', f'local-dir:{folder}', '--top-k', '1', '--runtime', runtime] + images) == 0
        got = capsys.readouterr().out.splitlines()
        top1_5 = [re.search(r'top-1 (\S+)%, top-5 (\S+)%', line).groups() for line in (got[0], eager[0])]
        assert top1_5[0] == top1_5[1] and _loss(got[0]) == pytest.approx(_loss(eager[0]), abs=1e-4)
        assert [line.split(': ')[1].split()[0] for line in got[1:]] == [line.split(': ')[1].split()[0]
                                                                         for line in eager[1:]]


def test_runtime_flag_errors(tmp_path, capsys):
    out = tmp_path / 'run'
    main(['train', '--model', 'octnet_mini', '--epochs', '1', '--output', str(out)] + TINY)
    folder = out / 'export'
    main(['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder)])
    capsys.readouterr()
    cases = [
        (['eval', '--model', 'octnet_mini', '--runtime', 'onnxruntime'], 'give --model local-dir:DIR'),
        (['eval', '--model', f'local-dir:{folder}', '--runtime', 'onnxruntime'], 'has no runtime file'),
        (['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder), '--dynamic-size'],
         'add --format onnx or --format openvino'),
        (['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder), '--format',
          'openvino', '--dynamo'], 'they do nothing with --format openvino'),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert main(['export', 'octnet_mini', '--checkpoint', str(out / 'best.pth'), '--out', str(folder),
                 '--format', 'openvino', '--overwrite']) == 0
    capsys.readouterr()
    for argv, message in [
        (['eval', '--model', f'local-dir:{folder}', '--runtime', 'onnxruntime'], 'which onnxruntime does not run'),
        (['eval', '--model', f'local-dir:{folder}', '--runtime', 'openvino', '--img-size', '16'],
         'the runtime file takes 8x8 images, not --img-size 16'),
        (['eval', '--model', f'local-dir:{folder}', '--runtime', 'openvino', '--reparam'], 'drop them with --runtime'),
    ]:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
