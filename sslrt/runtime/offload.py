"""Preparation in worker processes: decoding and transforms of a pair's image and audio off the
engine's process, for engines that outrun one Python process (a GPU's thousands of pairs/s).

Why processes: a pair holds the GIL for part of its preparation (the resize's per-block NumPy
calls, the spectrogram's), so threads stop scaling long before the cores run out. Measured with
benchmarks/prepare_scaling.py on the 16-core Xeon of an H200 machine (preparation alone, 128
pairs of a 1024 px JPEG and a 10 s WAV, malloc keeping freed memory): threads 4 / 8 / 15: 261 /
363 / 265 pairs/s (the GIL waits per pair grow from 49 to 171); processes 8 / 15: 523 / 828.

What crosses the process boundary: the image's encoded bytes (the parent reads them anyway, to key
the embedding cache by content) or the audio's path, and back the two input tensors (~1.3 MB per
pair) with the warnings they raised. Arrays travel out of band (pickle protocol 5): sent from
their own memory and received straight into the buffers the results live in, one copy, outside
the GIL, since every parent thread's GIL-held work is work the engine's thread waits for. The
embedding caches and the sharing of repeated inputs stay in the parent (pipeline.prepare_pair),
so a cached or repeated input is never sent.

Why not multiprocessing's pools: their spawn and forkserver workers re-run the parent's main
script (a user's script without an `if __name__ == "__main__"` guard would start workers from its
workers), fork is unsafe beside CUDA and threads, and ProcessPoolExecutor unpickles every result
on one thread. Here each worker is a fresh `python -c` on a socket pair, and the calling thread
sends its own task and receives its own result.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import NamedTuple

from sslrt.errors import SslrtError, first_line

# `python -c` puts the current directory first on the import path; the parent's own path follows in
# PYTHONPATH (see _Worker), so a numpy.py or an sslrt/ in the current directory is not imported here
# unless the parent imported it too.
_WORKER = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
           "from sslrt.runtime.offload import serve; serve(int(sys.argv[1]))")
_HEADER = struct.Struct("<QI")  # pickle bytes, out-of-band buffers


class _Message(NamedTuple):
    header: bytes
    views: list


def pack(obj) -> _Message:
    """obj pickled (protocol 5) with its arrays' memory kept out of band, as it is: no copy. Raises
    what pickling raises, before anything is sent."""
    buffers = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    return _Message(_HEADER.pack(len(meta), len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views)) + meta,
                    views)


def send(sock: socket.socket, message: _Message) -> None:
    sock.sendall(message.header)
    for view in message.views:
        sock.sendall(view)


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    """`size` bytes straight into a new buffer (the socket's read releases the GIL)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buffer


def recv(sock: socket.socket) -> tuple[bytearray, list]:
    """One whole message, not yet unpickled (so that a failure to unpickle leaves the stream in step)."""
    meta_size, count = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    sizes = struct.unpack(f"<{count}Q", _recv_exact(sock, 8 * count)) if count else ()
    meta = _recv_exact(sock, meta_size)
    return meta, [_recv_exact(sock, size) for size in sizes]


def unpack(message: tuple[bytearray, list]):
    """What `pack` packed; its arrays live in the received buffers (one copy, writable)."""
    meta, buffers = message
    return pickle.loads(meta, buffers=buffers)


def _error(exc: BaseException, what: str) -> SslrtError:
    return SslrtError(f"{what}: {type(exc).__name__}: {first_line(exc)}")


def serve(fd: int) -> None:
    """A worker's loop: (cwd, fn, args) in, (True, result) or (False, exception) out, until the
    parent sends None or goes away."""
    # The worker runs in a session of its own (start_new_session), so a terminal's Ctrl-C reaches
    # only the parent, which unwinds and stops the workers; ignored here too, for a kill -INT of
    # the group by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from sslrt.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # a worker process is sslrt's
    sock = socket.socket(fileno=fd)
    while True:
        try:
            message = recv(sock)
        except (EOFError, OSError):  # the parent is gone
            return
        try:
            task = unpack(message)
        except Exception as exc:  # noqa: BLE001  e.g. a function of the parent's __main__
            reply = (False, _error(exc, "a preparation worker could not load its task"))
        else:
            if task is None:
                return
            cwd, fn, args = task
            try:
                if cwd != os.getcwd():  # relative paths mean what they mean in the parent
                    os.chdir(cwd)
                reply = (True, fn(*args))
            except Exception as exc:  # noqa: BLE001  the caller re-raises it as its own
                reply = (False, exc)
        try:
            packed = pack(reply)
        except Exception as exc:  # noqa: BLE001  a result or an error that does not pickle
            packed = pack((False, _error(exc, "a preparation worker's reply could not be sent")))
        try:
            send(sock, packed)
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self):
        parent, child = socket.socketpair()
        env = dict(os.environ)
        # the parent's import path: sslrt from a checkout, and whatever the parent could import
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.process = subprocess.Popen([sys.executable, "-c", _WORKER, str(child.fileno())], pass_fds=(child.fileno(),),
                                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            parent.close()
            raise SslrtError(f"cannot start a preparation worker process: {first_line(exc)}") from None
        finally:
            child.close()
        self.sock = parent

    def call(self, message: _Message):
        send(self.sock, message)
        return recv(self.sock)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            send(self.sock, pack(None))
        except OSError:
            pass
        self.sock.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # busy with a long task: it would finish for nobody
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.stop()


class ProcessOffload:
    """`offload(fn, *args)`: fn(*args) run in one of `processes` worker processes, its result (or
    its exception) returned to the calling thread; the caller waits without the GIL. `fn` must
    be importable by name and its arguments must pickle (module-level functions, arrays, paths).
    Workers start on first use and stay until close(); one that dies is replaced. Thread-safe:
    each call has a worker to itself; close() stops the idle workers at once and the busy ones as
    their calls return."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(processes):
            self._idle.put(None)  # a slot: its worker starts when first needed

    def __call__(self, fn, *args):
        message = pack((os.getcwd(), fn, args))  # what does not pickle fails here, nothing sent
        worker = self._idle.get()
        with self._lock:
            closed = self._closed
        if closed:
            if worker is not None:
                self._retire(worker, kill=False)
            self._idle.put(None)
            raise RuntimeError("this ProcessOffload is closed")
        slot = None  # what goes back to the idle queue: the worker, or None for a fresh one
        try:
            if worker is None:
                worker = _Worker()
                with self._lock:
                    self._workers.append(worker)
            try:
                reply = worker.call(message)
            except (EOFError, OSError):
                # killed (out of memory, a signal): one line; a fresh worker takes the slot
                self._retire(worker)
                raise SslrtError("a preparation worker process died (out of memory or killed); retry with fewer "
                                 "--workers or with --worker-threads (processes=False)") from None
            except BaseException:
                # interrupted between send and reply: the worker's reply would reach the next caller
                self._retire(worker)
                raise
            slot = worker
        finally:
            with self._lock:
                closed = self._closed
            if closed and slot is not None:
                self._retire(slot, kill=False)
                slot = None
            self._idle.put(slot)
        try:
            ok, value = unpack(reply)
        except Exception as exc:  # noqa: BLE001  e.g. an exception class that does not unpickle
            raise _error(exc, "a preparation worker's reply could not be read") from None
        if not ok:
            raise value
        return value

    def _retire(self, worker: _Worker, kill: bool = True) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        if kill:
            worker.kill()
        else:
            worker.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        drained = []
        while True:  # the idle workers now; the busy ones stop as their calls return
            try:
                drained.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in drained:
            if worker is not None:
                self._retire(worker, kill=False)
            self._idle.put(None)  # the slot stays: a later call is refused, not left waiting
