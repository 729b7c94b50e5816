"""Where checkpoints come from: the Hugging Face Hub (`hub`) or a folder laid out like it (`local`)."""

from __future__ import annotations

from pathlib import Path

from registry.errors import ModelError

# Files a model folder needs to be loaded and scored; weights are never pickles when safetensors exist.
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "README.md")


def resolve_model_dir(path_or_repo: str | Path, *, revision: str | None = None) -> Path:
    """A local folder holding the model: the path itself, or a Hub snapshot pinned to `revision`.

    Args:
        path_or_repo: a folder, or a Hub repo id (`org/name`); `HF_ENDPOINT` and `HF_TOKEN` apply.
        revision: commit sha, branch or tag for a Hub repo.

    Returns:
        The folder with config, weights and tokenizer files.

    Raises:
        ModelError: if the folder does not exist and the repo cannot be downloaded.
    """
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelError(f"{text}: no such model folder (and not a Hub repo id of the form org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=list(MODEL_FILE_PATTERNS)))
    except RepositoryNotFoundError as exc:
        raise ModelError(f"{text}: repository not found on the Hub") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"{text}: not in the local cache and the Hub cannot be reached (offline?)") from exc
    except HfHubHTTPError as exc:
        raise ModelError(f"{text}: Hub download failed: {exc}") from exc
