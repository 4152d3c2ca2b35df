"""A tiny name -> object registry, so backbones, datasets and stages are one entry each."""

from __future__ import annotations

from typing import Dict, Generic, Iterator, Mapping, Optional, TypeVar

from pqd.errors import PqdError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names fail with the list of known ones."""

    def __init__(self, kind: str, items: Optional[Mapping[str, T]] = None) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}
        for name, obj in (items or {}).items():
            self.add(name, obj)

    @classmethod
    def of(cls, kind: str, *specs: T, key: str = "name") -> "Registry[T]":
        """A registry of ``specs``, each under its own ``key`` attribute: an entry names itself, so the
        spec is the single source of its name."""
        return cls(kind, {getattr(s, key): s for s in specs})

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise PqdError(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)
