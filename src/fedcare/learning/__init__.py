"""Learning layer: tasks, the model zoo, local training and evaluation (PyTorch)."""

from fedcare.learning.models import ModelFactory, ModelSpec, get_params, initial_model, set_params
from fedcare.learning.site import LocalSite
from fedcare.learning.tasks import Task

__all__ = ["LocalSite", "ModelFactory", "ModelSpec", "Task", "get_params", "initial_model", "set_params"]
