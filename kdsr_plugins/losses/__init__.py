"""Registered losses of kdsr_plugins: every `*_loss.py` file here is imported automatically."""
import os.path as osp

from kdsr_plugins.utils.registry_tools import import_role_modules

_modules = import_role_modules(__name__, osp.dirname(osp.abspath(__file__)), '_loss')
