"""Learning layer: tasks, models built from an encoder and a head, local training and evaluation (PyTorch)."""

from fedcare.learning.models import ModelFactory, build_model, get_params, initial_model, set_params
from fedcare.learning.site import LocalSite
from fedcare.learning.tasks import Task, make_task, register_task

__all__ = ["LocalSite", "ModelFactory", "Task", "build_model", "get_params", "initial_model", "make_task",
           "register_task", "set_params"]
