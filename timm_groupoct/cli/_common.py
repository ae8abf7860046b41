"""What the subcommands share: model-name checks with helpful errors, common option help."""
import difflib

import timm

import timm_groupoct


CHANNELS_LAST_HELP = 'run in channels_last memory format (on the CPU much faster for octave models)'


class CLIError(Exception):
    """A user error: printed as one message; exit status 2 unless given."""

    def __init__(self, message: str, exit_status: int = 2):
        super().__init__(message)
        self.exit_status = exit_status


def check_model_name(name: str) -> str:
    """Return `name` if timm can build it, else raise a CLIError listing close matches."""
    if name.startswith(('hf-hub:', 'local-dir:')) or timm.is_model(name):
        return name
    ours = timm_groupoct.list_models()
    close = difflib.get_close_matches(name, ours, n=5, cutoff=0.5) or \
        difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Close matches: {", ".join(close)}.' if close else ''
    raise CLIError(f"unknown model '{name}'.{hint} `timm-groupoct list` shows this package's models.")
