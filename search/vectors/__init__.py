"""Task vectors: checkpoints, extraction and arithmetic, the vector cache, the composer, merge methods, and
the one composition path (`open_composer`)."""

from search.vectors.cache import cache_path, load_vector
from search.vectors.checkpoint import Checkpoint, check_same_architecture, model_parameters, read_config
from search.vectors.compose import open_composer, task_vectors
from search.vectors.composer import CHUNK, Composer, merge_state
from search.vectors.methods import get_method, methods
from search.vectors.taskvector import TaskVector, analogy

__all__ = [
    "CHUNK",
    "Checkpoint",
    "Composer",
    "TaskVector",
    "analogy",
    "cache_path",
    "check_same_architecture",
    "get_method",
    "load_vector",
    "merge_state",
    "methods",
    "model_parameters",
    "open_composer",
    "read_config",
    "task_vectors",
]
