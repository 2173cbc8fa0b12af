"""TODO: second_order (being written)."""

__all__: list[str] = []
REGISTRY: dict = {}
