"""Moved: the attention logging callback is ``attention_lightning.viz.logger``; the old names keep importing from here."""
from ._moved import forward

__getattr__ = forward(__name__, {
    "ACC_KEY": "attention_lightning.viz.logger",
    "Attention": "attention_lightning.attention",
    "AttentionLogger": "attention_lightning.viz.logger",
    "cut_batch": "attention_lightning.attention",
    "draw_attention": "attention_lightning.attention",
    "first_items": "attention_lightning.attention",
    "KEY": "attention_lightning.viz.logger",
    "log_run_config": "attention_lightning.viz.logger",
    "png_bytes": "attention_lightning.viz.files",
    "render": "attention_lightning.viz.logger",
    "run_facts": "attention_lightning.viz.logger",
    "STEPS_KEY": "attention_lightning.viz.logger",
    "TABLE_KEY": "attention_lightning.viz.logger",
    "wandb_examples": "attention_lightning.viz.wandb_media",
    "wandb_table": "attention_lightning.viz.wandb_media",
})
