"""Building blocks: plain ``nn.Module``s and functions. Nothing here imports Lightning."""
