"""One LightningModule per paper; each file registers itself (see ``attention_lightning.registry``)."""
