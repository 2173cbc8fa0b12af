"""TODO: pooling (being written)."""

__all__: list[str] = []
REGISTRY: dict = {}
