"""`torchrun --nproc_per_node=2` on CPU (gloo): one set of outputs written by rank 0, metrics over all the data."""
import csv
import os
import subprocess
import sys

import pytest
import timm
import torch
from torch.utils.data import DataLoader

from timm_groupoct.data import digits_datasets
from timm_groupoct.train import evaluate


@pytest.mark.timeout(300)
def test_two_processes_train_like_one(tmp_path):
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           '-m', 'timm_groupoct.cli', 'train', '--model', 'octnet_mini', '--img-size', '8', '--epochs', '2',
           '-b', '32', '--lr', '5e-3', '--output', str(out), '--no-progress']
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert run.returncode == 0, run.stderr[-3000:]
    # only rank 0 logs and writes: one summary line per epoch, the same files as a one-process run
    assert [line.split(':')[0] for line in run.stdout.splitlines() if line.startswith('epoch ')] == \
        ['epoch 1/2', 'epoch 2/2']
    assert run.stdout.count('done: 2 epochs') == 1
    assert sorted(p.name for p in out.iterdir()) == ['best.pth', 'curves.png', 'last.pth', 'metrics.csv']
    rows = list(csv.DictReader(open(out / 'metrics.csv')))
    assert list(rows[0]) == ['epoch', 'train_loss', 'val_loss', 'val_top1', 'val_top5', 'lr', 'train_images_per_s']
    ckpt = torch.load(out / 'last.pth', weights_only=True)
    assert ckpt['args']['world_size'] == 2 and ckpt['epoch'] == 2
    # each process evaluated half the validation set; the reduced metrics are those of the whole set
    model = timm.create_model('octnet_mini', num_classes=10, in_chans=1)
    model.load_state_dict(ckpt['state_dict'])
    _, val = digits_datasets(img_size=8)
    whole = evaluate(model, DataLoader(val, batch_size=64))
    assert float(rows[-1]['val_top1']) == pytest.approx(whole['top1'], abs=1e-9)
    assert float(rows[-1]['val_loss']) == pytest.approx(whole['loss'], rel=1e-5)
