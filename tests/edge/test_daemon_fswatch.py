"""The edge daemon's one file-system watcher: its file watches, the intents file and the
poke file share one ``FsWatchService`` (one inotify instance on Linux, one kernel watch
per folder), and an idle daemon with 20 file watches has no watch thread."""

from __future__ import annotations

import threading
from pathlib import Path

from tests_support import running_edge, wait_until

WATCHES = 20


def _intents(folders: list[Path]) -> str:
    parts = ['[[intent]]\nid = "local"\n[intent.match]\nsource_kind = ["file"]\n']
    for i, folder in enumerate(folders):
        parts.append(f'[[watch]]\nid = "f{i}"\nkind = "file"\npaths = ["{folder}"]\n'
                     'debounce = "20ms"\n')
    return "\n".join(parts)


def _file_items(member) -> int:
    with member.inbox() as inbox:
        return sum(1 for i in inbox.list(state=None, limit=1000) if i.source_kind == "file")


async def test_twenty_file_watches_share_the_daemons_one_watcher(relay, make_member,
                                                                  tmp_path: Path) -> None:
    member = await make_member()
    folders = [tmp_path / f"w{i}" for i in range(WATCHES)]
    for folder in folders:
        folder.mkdir()
    (member.home / "config" / "intents.toml").write_text(_intents(folders))
    before = threading.active_count()
    async with running_edge(member) as daemon:
        assert daemon.fs is not None and daemon.fs.backend == "inotify"
        assert daemon.watches is not None and daemon.watcher is not None
        await wait_until(lambda: daemon.watches.files.ready.is_set(), 10, "file watches up")
        await wait_until(daemon.watcher.ready.is_set, 10, "intents watched")
        # every file watch's folder, the config folder and the data folder: once each
        assert daemon.fs.kernel_watches == WATCHES + 2
        # no thread per watch (the link's worker threads come and go with deliveries)
        assert threading.active_count() - before < 4
        (folders[7] / "a.txt").write_text("x")
        await wait_until(lambda: _file_items(member) == 1, 10, "the change in the inbox")
    assert daemon.fs is None  # closed with the daemon
