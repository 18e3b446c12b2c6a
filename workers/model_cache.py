"""Trained style models kept loaded in a worker process for style.apply: least recently used first out,
bounded by the bytes of their weights on the device.

A model is keyed by its object key and sha256, so a model file that changed (or was deleted and trained
again under the same id) is never served from a stale entry. One process, one job at a time: no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Key = tuple[str, str, str]  # (object key, sha256, device)


def weight_bytes(net: nn.Module) -> int:
    """Bytes of a network's parameters and buffers."""
    tensors = [*net.parameters(), *net.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class ModelCache:
    """An LRU of loaded networks, at most ``max_bytes`` of weights in all."""

    max_bytes: int
    _entries: OrderedDict[Key, tuple[nn.Module, int]] = field(default_factory=OrderedDict)
    hits: int = 0
    misses: int = 0

    @property
    def used_bytes(self) -> int:
        """Bytes of weights held now."""
        return sum(size for _net, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, *, key: str, sha256: str, device: torch.device, load: Callable[[], nn.Module]) -> nn.Module:
        """The cached network for (key, sha256) on ``device``, or ``load()``'s, moved there, kept if it fits."""
        entry_key = (key, sha256, str(device))
        entry = self._entries.get(entry_key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(entry_key)
            return entry[0]
        self.misses += 1
        net = load().to(device).eval()
        size = weight_bytes(net)
        if size <= self.max_bytes:
            while self._entries and self.used_bytes + size > self.max_bytes:
                self._entries.popitem(last=False)
            self._entries[entry_key] = (net, size)
        return net
