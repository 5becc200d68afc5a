"""LightningDataModules, one file per source; each registers itself with ``@register_datamodule``."""
