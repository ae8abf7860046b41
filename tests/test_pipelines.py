"""The models inside the pipelines people already have, fed the way their users feed them, with timm's own
resnet50 as the control: segmentation_models_pytorch, torchvision detection, torchvision / timm fx feature
extraction, Hugging Face transformers, timm's scripts; and the timm model arguments they rely on
(feature levels, output_stride, device / dtype, gradient checkpointing of features_only models)."""
import collections
import json
import re

import pytest
import timm
import torch
import torch.nn as nn

import timm_groupoct
from timm_groupoct.cli import main

from helpers import heavy_beyond, randomise_norm_stats

IMAGENET_SIZE = [n for n in timm_groupoct.list_models() if timm.models.get_pretrained_cfg(n).input_size[-1] == 224]
# one model per family: octave (Oct-ResNet), GroupNet, ResNeXt with GroupNorm
FAMILIES = ['oct_resnet26', 'groupnet_tiny', 'resnext50_32x4d_gn']
# what `make test` feeds the pipelines: one model per family, and timm's resnet50 as the control
PER_FAMILY = FAMILIES + ['resnet50']


def test_the_imagenet_size_models_are_the_ones_expected():
    assert len(IMAGENET_SIZE) == 10 and {'oct_resnet50', 'groupnet_base', 'resnext101_32x8d_gn'} <= set(IMAGENET_SIZE)


# ---- feature levels, output_stride, device and dtype -------------------------------------------------------------

@pytest.mark.parametrize('name', IMAGENET_SIZE + ['resnet50'])
def test_imagenet_size_models_have_timm_resnets_feature_levels(name):
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 65, 65))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [33, 17, 9, 5, 3]


@pytest.mark.parametrize('name, reductions', [('octnet_mini', [1, 1, 1]), ('groupnet_small', [1, 2, 4, 8]),
                                              ('resnext29_8x64d', [1, 1, 2, 4])])
def test_small_input_models_keep_their_stride_1_stem_level(name, reductions):
    assert timm.create_model(name, features_only=True).feature_info.reduction() == reductions


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('output_stride, reductions', [(16, [2, 4, 8, 16, 16]), (8, [2, 4, 8, 8, 8])])
@pytest.mark.parametrize('size', [64, 65])
def test_output_stride_dilates_the_last_stages(name, output_stride, reductions, size):
    model = randomise_norm_stats(timm.create_model(name, features_only=True, output_stride=output_stride))
    assert model.feature_info.reduction() == reductions
    feats = model(torch.randn(1, 3, size, size))
    assert [f.shape[-1] for f in feats] == [-(-size // r) for r in reductions]  # ceil(size / reduction)
    dilated = [m.dilation for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert max(d[0] for d in dilated) == 32 // output_stride


def test_octave_bands_keep_their_2_to_1_sizes_in_a_dilated_stage():
    model = randomise_norm_stats(timm.create_model('oct_resnet26', output_stride=8))
    sizes = []
    hooks = [model.stages[i].register_forward_hook(lambda m, inp, out: sizes.append(
        (out[0].shape[-1], out[1].shape[-1]))) for i in range(3)]
    with torch.no_grad():
        model(torch.randn(1, 3, 71, 71))
    for h in hooks:
        h.remove()
    assert sizes == [(18, 9), (9, 5), (9, 5)]  # stage 3 stops striding: the bands stay at 9 and ceil(9 / 2)


def test_output_stride_a_model_cannot_do_is_a_clear_error():
    with pytest.raises(ValueError, match=re.escape('output_stride must be one of 4, 8, 16, 32 for this model')):
        timm.create_model('oct_resnet26', output_stride=12)
    with pytest.raises(ValueError, match=re.escape('output_stride must be one of 2, 4, 8 for this model')):
        timm.create_model('groupnet_small', output_stride=16)


@pytest.mark.parametrize('name', FAMILIES + ['octnet_mini'])
def test_device_and_dtype_through_create_model(name):
    model = timm.create_model(name, device='meta')
    assert {p.device.type for p in model.parameters()} == {'meta'}
    assert model(torch.empty(1, 3, 64, 64, device='meta')).shape == (1, 1000)
    model = timm.create_model(name, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize('name', FAMILIES)
def test_features_only_models_take_gradient_checkpointing(name):
    torch.manual_seed(0)
    model = randomise_norm_stats(timm.create_model(name, features_only=True)).train()
    x = torch.randn(2, 3, 64, 64)
    plain = sum(f.float().mean() for f in model(x))
    plain.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    assert model.model.grad_checkpointing
    checkpointed = sum(f.float().mean() for f in model(x))
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, plain)
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)


# ---- fx feature extraction -------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', FAMILIES + ['octnet_mini', 'oct_resnext50_32x4d'])
def test_fx_feature_extraction_returns_the_maps_features_only_returns(name):
    from torchvision.models.feature_extraction import create_feature_extractor
    model = randomise_norm_stats(timm.create_model(name))
    x = torch.randn(1, 3, 64, 64)
    extractor = create_feature_extractor(model, return_nodes=[f['module'] for f in model.feature_info])
    timm_fx = timm.create_model(name, features_only=True, feature_cls='fx').eval()
    missing, _ = timm_fx.load_state_dict(  # (FeatureGraphNet holds the traced model as `graph_module`, no fc)
        {f'graph_module.{k}': v for k, v in model.state_dict().items()}, strict=False)
    assert not missing
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        got = list(extractor(x).values())
        got_timm = timm_fx(x)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
    for a, b, c in zip(got, got_timm, expected):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)


def test_fx_tracing_of_the_whole_model_is_unchanged():
    model = randomise_norm_stats(timm.create_model('oct_resnet26'))
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


# ---- segmentation_models_pytorch -----------------------------------------------------------------------------

@pytest.mark.parametrize('arch', ['Unet', 'FPN', 'DeepLabV3Plus'])
@pytest.mark.parametrize('name', heavy_beyond(IMAGENET_SIZE + ['resnet50'], PER_FAMILY))
def test_segmentation_models_pytorch_takes_the_models_as_tu_encoders(name, arch):
    import segmentation_models_pytorch as smp
    torch.manual_seed(0)
    model = getattr(smp, arch)(encoder_name=f'tu-{name}', encoder_weights=None, classes=3)
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 64, 64)


def test_deeplab_asks_the_encoder_for_output_stride_16():
    import segmentation_models_pytorch as smp
    model = smp.DeepLabV3Plus(encoder_name='tu-oct_resnet26', encoder_weights=None, classes=2)
    assert model.encoder.model.feature_info.reduction() == [2, 4, 8, 16, 16]


# ---- torchvision detection --------------------------------------------------------------------------------------

class TimmBackboneWithFPN(nn.Module):
    """The usual way to put a timm backbone under torchvision's detectors: features_only + FeaturePyramidNetwork."""

    def __init__(self, name: str):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
        self.body = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 64, extra_blocks=LastLevelMaxPool())
        self.out_channels = 64

    def forward(self, x):
        return self.fpn(collections.OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


@pytest.mark.parametrize('name', heavy_beyond(IMAGENET_SIZE + ['resnet50'], PER_FAMILY))
def test_torchvision_faster_rcnn_trains_and_detects_with_the_backbone(name):
    from torchvision.models.detection import FasterRCNN
    torch.manual_seed(0)
    model = FasterRCNN(TimmBackboneWithFPN(name), num_classes=3, min_size=64, max_size=96)
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [dict(boxes=torch.tensor([[4., 6., 40., 50.]]), labels=torch.tensor([1])),
               dict(boxes=torch.tensor([[10., 10., 30., 60.]]), labels=torch.tensor([2]))]
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2 and all(set(d) == {'boxes', 'labels', 'scores'} for d in detections)


# ---- Hugging Face transformers ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def exported_folders(tmp_path_factory):
    """name -> a folder `timm-groupoct export` wrote for a 5-class model with label names (written once)."""
    folders = {}

    def folder(name):
        if name not in folders:
            tmp = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            torch.save(randomise_norm_stats(timm.create_model(name, num_classes=5)).state_dict(), tmp / 'ckpt.pth')
            assert main(['export', name, '--checkpoint', str(tmp / 'ckpt.pth'), '--out', str(tmp / 'folder'),
                         '--labels', 'cat,dog,fox,owl,emu']) == 0
            folders[name] = tmp / 'folder'
        return folders[name]
    return folder


@pytest.mark.parametrize('name', heavy_beyond(IMAGENET_SIZE, PER_FAMILY))
def test_transformers_loads_an_exported_folder_and_computes_what_timm_computes(name, exported_folders):
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
    folder = exported_folders(name)
    assert 'num_classes' not in json.loads((folder / 'config.json').read_text())['model_args']
    hf = AutoModelForImageClassification.from_pretrained(folder).eval()
    ours = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, ours(x), rtol=1e-5, atol=1e-5)
    assert hf.config.id2label[3] == 'owl'
    assert type(AutoModel.from_pretrained(folder)).__name__ == 'TimmWrapperModel'
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__ == 'TimmWrapperImageProcessor'


@pytest.mark.parametrize('name', ['oct_resnet26', 'groupnet_tiny'])
def test_transformers_pipeline_classifies_images_with_an_exported_folder(name, exported_folders):
    from PIL import Image
    from transformers import pipeline
    classify = pipeline('image-classification', model=str(exported_folders(name)))
    image = Image.fromarray((torch.rand(50, 40, 3) * 255).byte().numpy())
    top = classify(image, top_k=2)
    assert len(top) == 2 and {t['label'] for t in top} <= {'cat', 'dog', 'fox', 'owl', 'emu'}
    assert top[0]['score'] >= top[1]['score']


def test_a_folder_an_older_export_wrote_still_loads_in_timm(exported_folders):
    folder = exported_folders('oct_resnet26')
    config = json.loads((folder / 'config.json').read_text())
    config['model_args']['num_classes'] = 5  # what exports wrote before
    (folder / 'config.json').write_text(json.dumps(config))
    try:
        model = timm.create_model(f'local-dir:{folder}', pretrained=True)
        assert model.num_classes == 5
    finally:
        del config['model_args']['num_classes']
        (folder / 'config.json').write_text(json.dumps(config))


# ---- timm's scripts --------------------------------------------------------------------------------------------

def test_timm_script_runs_a_script_with_the_models_registered(tmp_path, capsys):
    script = tmp_path / 'validate.py'
    script.write_text('import sys, timm\n'
                      'import helper_module  # beside the script, as with `python validate.py`\n'
                      'model = timm.create_model(sys.argv[sys.argv.index("--model") + 1])\n'
                      'print(type(model).__name__, sys.argv[0].endswith("validate.py"), sys.argv[1:], __name__)\n'
                      'sys.exit(int(sys.argv[-1]))\n')
    (tmp_path / 'helper_module.py').write_text('')
    assert main(['timm-script', str(script), '--model', 'oct_resnet26', '--amp', '0']) == 0
    assert capsys.readouterr().out == "OctNet True ['--model', 'oct_resnet26', '--amp', '0'] __main__\n"
    assert main(['timm-script', str(script), '--model', 'groupnet_tiny', '3']) == 3


def test_timm_script_errors(tmp_path, capsys):
    assert main(['timm-script', str(tmp_path / 'train.py'), '--model', 'oct_resnet26']) == 2
    assert 'no script' in capsys.readouterr().err
