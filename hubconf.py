"""torch.hub entry points: one per model that timm_groupoct registers, generated from timm's registry.

    model = torch.hub.load('<owner>/timm-groupoct', 'groupnet_small', num_classes=10)

Each entry point is a thin wrapper over `timm.create_model`, so every keyword argument and pretrained tag
(`pretrained_cfg='TAG'`) that timm accepts works. Nothing is imported until an entry point is looked up.
"""
dependencies = ['torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors']


def _model_names():
    import timm_groupoct
    return timm_groupoct.list_models()


def _entry_point(name):
    import timm

    def entry_point(pretrained=False, **kwargs):
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    doc = (timm.models.model_entrypoint(name).__doc__ or '').strip()
    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = (
        f'{doc}\n\n`pretrained=True` loads published weights; other keyword arguments go to '
        f'timm.create_model({name!r}, ...).')
    return entry_point


def __getattr__(name):
    if name.startswith('_') or name not in _model_names():
        raise AttributeError(f'hubconf has no entry point {name!r}; see torch.hub.list() for the models')
    return _entry_point(name)


def __dir__():
    return sorted(set(globals()) | set(_model_names()))
