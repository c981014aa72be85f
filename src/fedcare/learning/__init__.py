"""Learning layer: tasks, the model zoo, local training and evaluation (PyTorch)."""

from fedcare.learning.models import ModelFactory, build_model, get_params, initial_model, set_params
from fedcare.learning.site import LocalSite
from fedcare.learning.tasks import Task

__all__ = ["LocalSite", "ModelFactory", "build_model", "Task", "get_params", "initial_model", "set_params"]
