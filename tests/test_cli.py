import subprocess
import sys

import pytest

from timm_groupoct.cli import main


def test_info_reports_seed_000_shapes_params_and_groups(capsys):
    assert main(['info', 'groupnet_small', '--input-size', '3', '128', '128', '--num-classes', '10']) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == 'groupnet_small: input 3x128x128'
    rows = {l.split()[0]: l.split() for l in lines if l and l.split()[0] in ('stem', 'stages.0', 'stages.1',
                                                                           'stages.2', 'head', 'total')}
    assert [rows[k][1] for k in ('stem', 'stages.0', 'stages.1', 'stages.2')] == [
        '64x128x128', '128x64x64', '256x32x32', '512x16x16']
    assert rows['head'][1] == '10'
    assert rows['total'][1] == '1,020,618'
    assert sum(int(rows[k][3].replace(',', '')) for k in ('stem', 'stages.0', 'stages.1', 'stages.2')) + \
        int(rows['head'][2].replace(',', '')) == 1_020_618
    assert float(rows['total'][2]) == pytest.approx(2.699, abs=1e-3)
    assert 'grouped convolutions (6):' in out
    assert 'stages.1.0.conv2 128 -> 128 3x3 stride 2 groups=8 (16 channels per group)' in [' '.join(l.split()) for l in lines]


def test_info_default_input_size_is_the_cfgs(capsys):
    assert main(['info', 'groupnet_tiny']) == 0
    out = capsys.readouterr().out
    assert out.startswith('groupnet_tiny: input 3x224x224')
    assert '5,210,280' in out and '1024x7x7' in out


def test_info_grey_input(capsys):
    assert main(['info', 'groupnet_small', '--input-size', '1', '32', '32']) == 0
    assert '512x4x4' in capsys.readouterr().out


def test_info_unknown_model_lists_close_matches(capsys):
    assert main(['info', 'groupnet_smal']) == 2
    err = capsys.readouterr().err
    assert err.startswith("timm-groupoct info: error: unknown model 'groupnet_smal'. Close matches: groupnet_small")
    assert '`timm-groupoct list`' in err


def test_info_bad_input_size(capsys):
    assert main(['info', 'groupnet_small', '--input-size', '3', '0', '32']) == 2
    assert '--input-size must be positive, got 3 0 32' in capsys.readouterr().err


def test_info_model_argument_error_is_reported(capsys):
    assert main(['info', 'groupnet_small', '--num-classes', '-3']) == 2
    assert capsys.readouterr().err == ('timm-groupoct info: error: num_classes must be an integer >= 0 (0 '
                                       'removes the classifier), got -3\n')


def test_list(capsys):
    assert main(['list', 'groupnet_*']) == 0
    assert capsys.readouterr().out.split() == ['groupnet_base', 'groupnet_small', 'groupnet_small_gn', 'groupnet_tiny']


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, '-m', 'timm_groupoct.cli', 'list'], capture_output=True, text=True)
    assert out.returncode == 0 and 'groupconvnet' in out.stdout.split()
