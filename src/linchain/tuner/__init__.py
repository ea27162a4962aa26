"""The LinChain method as a PEFT tuner, laid out as PEFT's own tuners are.

- ``config.py``: :class:`LinChainConfig`, validated once in ``__post_init__``;
- ``layer.py``: :class:`LinChainLayer` (the chain around a frozen linear layer; ``_fold`` is the one
  place the chain's product is formed), with ``dropout.py`` and ``fused.py`` (the fused training path);
- ``model.py``: :class:`LinChainModel`, the tuner that injects the layers;
- ``quant.py``: bitsandbytes bases; ``saved.py``: saved adapters read without a model;
- ``peft_compat.py``: every workaround for a PEFT limitation, each naming the limitation.

Upstreaming into PEFT is copying this folder and deleting what ``peft_compat`` then no longer needs.
"""
