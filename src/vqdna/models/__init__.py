"""The stage-2 backbone (contract: docs/contracts.md, "Backbone API").

Importable with torch + transformers alone (the GPU machine has no mlflow/snakemake).
"""

from .collate import collate, special_token_ids
from .configuration import SPECIAL_TOKENS, VQDNAConfig
from .modeling import (
    IGNORE_INDEX,
    LORA_TARGET_MODULES,
    VQDNAForMaskedLM,
    VQDNAMaskedLMOutput,
    VQDNAModel,
    config_for_tokenizer,
)

__all__ = [
    "IGNORE_INDEX",
    "LORA_TARGET_MODULES",
    "SPECIAL_TOKENS",
    "VQDNAConfig",
    "VQDNAForMaskedLM",
    "VQDNAMaskedLMOutput",
    "VQDNAModel",
    "collate",
    "config_for_tokenizer",
    "special_token_ids",
]
