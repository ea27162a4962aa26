"""linchain: LinChain (Linear Chain Transformation, arXiv 2411.00039) adapters as a PEFT method.

Importing this package registers the method with PEFT under ``peft_type="LINCHAIN"``, so
``peft.get_peft_model``, ``save_pretrained``, ``PeftModel.from_pretrained`` and
``merge_and_unload`` work with :class:`LinChainConfig`.
"""

from .config import LINCHAIN, LinChainConfig
from .export import export_lora
from .layer import LinChainLayer
from .model import LinChainModel
from .registry import register

__version__ = "0.1.0"

__all__ = ["LINCHAIN", "LinChainConfig", "LinChainLayer", "LinChainModel", "__version__", "export_lora", "register"]

register()
