"""Linux inotify for the edge: the one module that imports ``inotify_simple``.

``InotifyHub`` is one inotify instance for a whole process: every subscription (a set of
folders, each watched alone or with everything below it) shares its kernel watches, and
the kernel's reports are read on the event loop when the descriptor becomes readable
(``loop.add_reader``) — no thread, no timer, no wakeup while nothing changes. It is the
kernel side of ``edge.fswatch``; callers use that module's ``FsWatch``.

Rules this module keeps:

* A subscription is armed when ``subscribe`` returns: the kernel's watches exist for its
  folders (and, recursively, every folder below them, each added *before* its entries
  are listed, so a folder created meanwhile is either listed or reported).
* Changes are ours (``"created"``, ``"modified"``, ``"deleted"``), with absolute paths;
  a rename is the old path deleted and the new one created, as watchfiles reports it. A
  watched folder that is deleted or moved away is reported as deleted (its own path).
* A folder created or moved into a recursively watched tree is watched from the moment
  it is reported; what was put in it before is not reported (as with watchfiles: the
  file watches scan such folders themselves).
* A subscription gets exactly what the kernel reported between ``subscribe`` and
  ``unsubscribe``: both first read what is queued, for the subscriptions already there.
* One kernel watch per folder whatever the number of subscriptions that need it, removed
  when the last of them ends. ``OSError`` (no such folder, permission, the
  ``max_user_watches`` limit) is raised by ``subscribe``; one that happens later, while
  following a new folder, ends the subscription with that error (``on_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

if sys.platform == "linux":
    from inotify_simple import INotify

log = logging.getLogger("mailslot.edge.inotify")

#: Whether this platform has inotify (Linux); elsewhere ``edge.fswatch`` uses watchfiles.
AVAILABLE = sys.platform == "linux"

Change = Literal["created", "modified", "deleted"]

# The kernel's bits (inotify.h), named here so that the module reads without the library.
_MODIFY, _ATTRIB = 0x2, 0x4
_MOVED_FROM, _MOVED_TO, _CREATE, _DELETE = 0x40, 0x80, 0x100, 0x200
_DELETE_SELF, _MOVE_SELF = 0x400, 0x800
_Q_OVERFLOW, _IGNORED, _ISDIR = 0x4000, 0x8000, 0x40000000
_ONLYDIR, _DONT_FOLLOW, _EXCL_UNLINK = 0x01000000, 0x02000000, 0x04000000
#: What every kernel watch asks for (one mask for all: a folder shared by subscriptions
#: keeps it). Not IN_CLOSE_WRITE or IN_OPEN/ACCESS: watchfiles reports neither.
_MASK = (_MODIFY | _ATTRIB | _MOVED_FROM | _MOVED_TO | _CREATE | _DELETE | _DELETE_SELF
         | _MOVE_SELF | _EXCL_UNLINK)
#: Below a root: folders only, never through a symlink (a root named by a symlink is
#: followed, as the user meant it).
_BELOW = _ONLYDIR | _DONT_FOLLOW


@dataclass(eq=False)
class Subscription:
    """What one ``FsWatch`` asked for; ``deliver(change, path)`` gets every change under
    it, ``on_error(exc)`` a failure that ended it (both on the event loop)."""

    roots: tuple[str, ...]
    recursive: bool
    deliver: Callable[[Change, str], None]
    on_error: Callable[[OSError], None]
    ignore_permission_denied: bool = False
    active: bool = field(default=True, init=False)

    def covers(self, path: str) -> bool:
        """Whether a change of ``path`` is this subscription's: a root itself, an entry
        of a root, or (recursive) anything below one."""
        parent = os.path.dirname(path)
        for root in self.roots:
            if path == root or parent == root:
                return True
            if self.recursive and path.startswith(root.rstrip("/") + "/"):
                return True
        return False


class InotifyHub:
    """One inotify instance, shared: ``subscribe`` (on the event loop's thread), later
    ``unsubscribe``; ``close`` when the process is done watching. Opened on the first
    subscription."""

    def __init__(self) -> None:
        self._inotify: INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paths: dict[int, str] = {}  # watch descriptor → folder
        self._wds: dict[str, int] = {}  # folder → watch descriptor
        self._owners: dict[int, set[Subscription]] = {}
        self._subscriptions: list[Subscription] = []
        self._reading = False  # a delivery that (un)subscribes must not read ahead

    @property
    def watched(self) -> int:
        """How many kernel watches are in place (each folder once)."""
        return len(self._paths)

    def subscribe(self, folders: Sequence[str], *, recursive: bool,
                  deliver: Callable[[Change, str], None],
                  on_error: Callable[[OSError], None],
                  ignore_permission_denied: bool = False) -> Subscription:
        """Watch ``folders``; armed when this returns. Raises ``OSError`` (nothing is left
        subscribed then)."""
        self._open()
        self._readable()  # what the kernel reported before goes to those already here
        roots = tuple(os.path.abspath(os.fspath(f)) for f in folders)
        subscription = Subscription(roots, recursive, deliver, on_error,
                                    ignore_permission_denied)
        try:
            for root in roots:
                self._add(root, subscription, root=True)
                if recursive:
                    self._add_below(root, subscription)
        except OSError:
            self.unsubscribe(subscription)
            raise
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """End ``subscription``: nothing more is delivered to it; the kernel watches no
        other subscription needs are removed. Safe to call more than once."""
        if subscription.active:
            self._readable()  # what the kernel reported until now is still delivered to it
        subscription.active = False
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        for wd, owners in list(self._owners.items()):
            owners.discard(subscription)
            if not owners:
                self._remove(wd)

    def close(self) -> None:
        """Stop reading and close the descriptor (every kernel watch goes with it)."""
        for subscription in list(self._subscriptions):
            self.unsubscribe(subscription)
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
        self._paths.clear()
        self._wds.clear()
        self._owners.clear()

    # -- kernel watches -------------------------------------------------------------

    def _open(self) -> None:
        if self._inotify is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._inotify = INotify(nonblocking=True)
        self._loop.add_reader(self._inotify.fileno(), self._readable)

    def _add(self, folder: str, subscription: Subscription, root: bool = False) -> bool:
        """Add (or share) the kernel watch of ``folder``. A folder below a root that
        vanished or is not a folder is skipped (False); so is one that may not be read
        when permission errors are ignored."""
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(folder, _MASK if root else _MASK | _BELOW)
        except (FileNotFoundError, NotADirectoryError):
            if root:
                raise
            return False
        except PermissionError:
            if root or not subscription.ignore_permission_denied:
                raise
            return False
        old = self._paths.get(wd)
        if old is not None and old != folder:  # the same folder under another name
            self._wds.pop(old, None)
        self._paths[wd] = folder
        self._wds[folder] = wd
        self._owners.setdefault(wd, set()).add(subscription)
        return True

    def _add_below(self, folder: str, subscription: Subscription) -> None:
        """Watch every folder below ``folder`` (symlinks not followed): each is watched
        before it is listed, so nothing created meanwhile escapes both."""
        pending = [folder]
        while pending:
            current = pending.pop()
            try:
                with os.scandir(current) as entries:
                    folders = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError:
                if subscription.ignore_permission_denied:
                    continue
                raise
            for child in folders:
                if self._add(child, subscription):
                    pending.append(child)

    def _remove(self, wd: int) -> None:
        self._owners.pop(wd, None)
        folder = self._paths.pop(wd, None)
        if folder is not None and self._wds.get(folder) == wd:
            del self._wds[folder]
        if self._inotify is not None:
            with contextlib.suppress(OSError):  # the kernel dropped it (the folder is gone)
                self._inotify.rm_watch(wd)

    def _forget_below(self, folder: str) -> None:
        """A folder moved away: its watches (and those below) name paths that no longer
        are; remove them (the new place, if watched, is added as created)."""
        prefix = folder.rstrip("/") + "/"
        for wd, path in list(self._paths.items()):
            if path == folder or path.startswith(prefix):
                self._remove(wd)

    # -- reading --------------------------------------------------------------------

    def _readable(self) -> None:
        if self._inotify is None or self._reading:
            return
        self._reading = True
        try:
            try:
                events = self._inotify.read(timeout=0)
            except OSError as exc:
                log.error("inotify: reading failed: %s", exc)
                for subscription in list(self._subscriptions):
                    self._fail(subscription, exc)
                return
            for event in events:
                self._dispatch(event.wd, event.mask, event.name)
        finally:
            self._reading = False

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & _Q_OVERFLOW:
            log.warning("inotify: the kernel's event queue overflowed; changes were lost")
            return
        folder = self._paths.get(wd)
        if mask & _IGNORED:
            if folder is not None:
                self._owners.pop(wd, None)
                del self._paths[wd]
                if self._wds.get(folder) == wd:
                    del self._wds[folder]
            return
        if folder is None:
            return  # a watch removed a moment ago
        if mask & (_DELETE_SELF | _MOVE_SELF):
            # Only a root needs this: below one, the parent's report said it already.
            if mask & _MOVE_SELF:
                self._forget_below(folder)
            self._deliver("deleted", folder, roots_only=True)
            return
        path = os.path.join(folder, name) if name else folder
        change: Change
        if mask & (_CREATE | _MOVED_TO):
            change = "created"
        elif mask & (_DELETE | _MOVED_FROM):
            change = "deleted"
        else:
            change = "modified"
        if mask & _ISDIR:
            if change == "created":
                self._follow_new_folder(path)
            elif mask & _MOVED_FROM:
                self._forget_below(path)
        self._deliver(change, path)

    def _follow_new_folder(self, path: str) -> None:
        for subscription in list(self._subscriptions):
            if subscription.recursive and any(
                    path.startswith(root.rstrip("/") + "/") for root in subscription.roots):
                try:
                    if self._add(path, subscription):
                        self._add_below(path, subscription)
                except OSError as exc:
                    self._fail(subscription, exc)

    def _deliver(self, change: Change, path: str, roots_only: bool = False) -> None:
        for subscription in list(self._subscriptions):
            if not subscription.active:
                continue
            if roots_only and path not in subscription.roots:
                continue
            if subscription.covers(path):
                subscription.deliver(change, path)

    def _fail(self, subscription: Subscription, exc: OSError) -> None:
        self.unsubscribe(subscription)
        subscription.on_error(exc)
