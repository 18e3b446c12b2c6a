"""The worker's cache of loaded style models (workers/model_cache.py) and style.apply's output names
(workers/style/apply.py). Each test reads Given / When / Then."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from workers.model_cache import ModelCache, weight_bytes  # noqa: E402 - needs torch
from workers.style.apply import output_name  # noqa: E402

CPU = torch.device("cpu")


def net(features: int) -> torch.nn.Module:
    """A network of ``features`` x ``features`` float32 weights plus biases."""
    return torch.nn.Linear(features, features)


def test_weight_bytes_counts_parameters_and_buffers() -> None:
    assert weight_bytes(net(10)) == (10 * 10 + 10) * 4
    assert weight_bytes(torch.nn.BatchNorm2d(4)) == (4 + 4) * 4 + (4 + 4) * 4 + 8  # affine, running stats, count


def test_a_hit_does_not_load_and_the_least_recently_used_goes_first() -> None:
    # Given a cache room for two 10x10 networks (440 bytes each)
    cache = ModelCache(max_bytes=2 * 440)
    loads: list[str] = []

    def get(key: str) -> torch.nn.Module:
        return cache.get(key=key, sha256="s", device=CPU, load=lambda: loads.append(key) or net(10))

    # When a, b, a, c, then b and a are asked for
    a = get("a")
    get("b")
    assert get("a") is a  # a hit: the same network, not loaded again
    get("c")  # evicts b, the least recently used
    get("b")  # loaded again, evicting a
    get("a")
    # Then only what was evicted was loaded twice, and the cache never held more than its bytes
    assert loads == ["a", "b", "c", "b", "a"]
    assert (cache.hits, cache.misses) == (1, 5)
    assert len(cache) == 2 and cache.used_bytes <= cache.max_bytes


def test_a_changed_file_is_loaded_again_and_a_model_too_big_is_not_kept() -> None:
    cache = ModelCache(max_bytes=500)
    first = cache.get(key="k", sha256="old", device=CPU, load=lambda: net(10))
    # When the same key comes with another sha256 (the file changed), it is a miss
    changed = cache.get(key="k", sha256="new", device=CPU, load=lambda: net(10))
    assert changed is not first and cache.misses == 2
    # And a network over the cache's bytes is served but not kept (nor does it evict the others)
    big = cache.get(key="big", sha256="s", device=CPU, load=lambda: net(20))
    assert weight_bytes(big) > cache.max_bytes
    assert len(cache) == 1 and cache.get(key="k", sha256="new", device=CPU, load=lambda: net(10)) is changed


def test_a_disabled_cache_keeps_nothing() -> None:
    cache = ModelCache(max_bytes=0)
    cache.get(key="k", sha256="s", device=CPU, load=lambda: net(2))
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("sources", "names"),
    [
        (["astronaut"], ["astronaut.png"]),
        (["trip/a.jpg", "trip/a.png", "trip/a.webp"], ["trip/a.png", "trip/a-2.png", "trip/a-3.png"]),
        (["x.tar.gz", "noext"], ["x.tar.png", "noext.png"]),
    ],
)
def test_output_names_follow_the_pictures_and_never_collide(sources: list[str], names: list[str]) -> None:
    taken: set[str] = set()
    assert [output_name(s, taken) for s in sources] == names
    assert taken == set(names)
