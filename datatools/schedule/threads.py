"""The map over items on this process's threads: work that waits on the network or the disk
(downloads, pack and unpack), where a Dask task per item would cost more than the item.
`tasks.map_tasks` is its counterpart on the cluster's workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed


def map_threads(work: Callable, items: Iterable, threads: int,
                on_stop: Callable[[], None] = lambda: None) -> Iterator[tuple]:
    """Run `work(item)` for each item on `threads` threads; yields (item, result, exception)
    as each finishes (exception None, or what it raised). When the caller stops early (it
    raises, Ctrl-C, the iterator is closed), `on_stop()` runs first (to tell running items to
    stop: a download's cancel event), items not started are dropped, and the running ones are
    waited for: no thread outlives the map."""
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    finished = False
    try:
        futures = {pool.submit(work, item): item for item in items}
        for fut in as_completed(futures):
            exc = fut.exception()
            yield futures[fut], None if exc is not None else fut.result(), exc
        finished = True
    finally:
        if not finished:
            on_stop()
        pool.shutdown(wait=True, cancel_futures=not finished)
