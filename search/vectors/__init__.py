"""Task vectors: extraction, the vector cache, merge methods, and the one composition path."""

from search.vectors.compose import open_composer, task_vectors
from search.vectors.methods import get_method
from search.vectors.taskvector import Composer, TaskVector, load_vector

__all__ = ["Composer", "TaskVector", "get_method", "load_vector", "open_composer", "task_vectors"]
