"""Plain ``nn.Module`` networks (no Lightning): backbones, heads and the method-specific architectures."""
