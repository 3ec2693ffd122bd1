"""transferkit: knowledge transfer between deep learning models.

Fine-tuning, knowledge distillation, domain adaptation and meta-learning
behind one training loop.
"""

__version__ = "0.1.0"

from .errors import TransferkitError

__all__ = ["TransferkitError", "__version__"]
