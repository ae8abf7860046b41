import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Union

# Hermetic Hub: a private cache, offline. huggingface_hub reads these at import, so set them before timm loads.
HF_HOME = Path(tempfile.mkdtemp(prefix='timm-groupoct-hf-'))
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)  # it holds ResNet-50-size weights: ~0.8 GB a run
os.environ['HF_HOME'] = str(HF_HOME)
os.environ['HF_HUB_CACHE'] = str(HF_HOME / 'hub')
os.environ['HF_HUB_OFFLINE'] = '1'

import pytest
import torch
from safetensors.torch import save_file

torch.set_num_threads(min(2, torch.get_num_threads()))


class OfflineHubCache:
    """Lays out repos in huggingface_hub's on-disk cache format, as `hf_hub_download` leaves them:
    `models--ORG--NAME/{blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main = <commit>}`."""

    def __init__(self, root: Path):
        self.root = root

    def add(self, repo_id: str, files: Dict[str, Union[bytes, Path]], revision: str = 'main') -> Path:
        """Put `files` (name -> content or path) in the cache as repo `repo_id`; return the snapshot folder."""
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        contents = {name: (data.read_bytes() if isinstance(data, Path) else data) for name, data in files.items()}
        commit = hashlib.sha1(b''.join(hashlib.sha256(c).digest() for c in contents.values())).hexdigest()
        snapshot = repo / 'snapshots' / commit
        (repo / 'blobs').mkdir(parents=True, exist_ok=True)
        for name, content in contents.items():
            digest = hashlib.sha256(content).hexdigest()
            (repo / 'blobs' / digest).write_bytes(content)
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(repo / 'blobs' / digest, link.parent))
        (repo / 'refs').mkdir(exist_ok=True)
        (repo / 'refs' / revision).write_text(commit)  # no trailing newline, as the Hub writes it
        return snapshot

    def add_state_dict(self, repo_id: str, state_dict: Dict[str, torch.Tensor]) -> Path:
        """A weights-only repo: `model.safetensors` holding `state_dict`."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root.parent / 'staging.safetensors'
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
        try:
            return self.add(repo_id, {'model.safetensors': path})
        finally:
            path.unlink()


@pytest.fixture(scope='session')
def hub_cache() -> OfflineHubCache:
    return OfflineHubCache(HF_HOME / 'hub')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
