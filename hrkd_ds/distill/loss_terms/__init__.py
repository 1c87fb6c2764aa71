"""The registered distillation terms, one module each; importing this package registers every
module in it (term_registry.py says what a term declares). A new term is a new module here."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
