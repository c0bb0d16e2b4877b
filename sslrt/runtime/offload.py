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
the GIL, since every parent thread's GIL-held work is work the engine's thread waits for. The embedding caches and the sharing of repeated inputs stay
in the parent (pipeline.prepare_pair), so a cached or repeated input is never sent.

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

from sslrt.errors import SslrtError

_WORKER = "import sys; from sslrt.runtime.offload import serve; serve(int(sys.argv[1]))"
_HEADER = struct.Struct("<QI")  # pickle bytes, out-of-band buffers


def send(sock: socket.socket, obj) -> None:
    """obj pickled (protocol 5) with its arrays' memory sent out of band, as it is: no copy here."""
    buffers = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    sock.sendall(_HEADER.pack(len(meta), len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views)) + meta)
    for view in views:
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


def recv(sock: socket.socket):
    """What `send` sent; its arrays live in the received buffers (one copy, writable)."""
    meta_size, count = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    sizes = struct.unpack(f"<{count}Q", _recv_exact(sock, 8 * count)) if count else ()
    meta = _recv_exact(sock, meta_size)
    return pickle.loads(meta, buffers=[_recv_exact(sock, size) for size in sizes])


def serve(fd: int) -> None:
    """A worker's loop: (fn, args) in, (True, result) or (False, exception) out, until the parent
    sends None or goes away."""
    # Ctrl-C reaches the whole process group: the parent decides (it unwinds and closes the
    # workers), so a worker must not die of it halfway through a task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from sslrt.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # a worker process is sslrt's
    sock = socket.socket(fileno=fd)
    while True:
        try:
            task = recv(sock)
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001  the caller re-raises it as its own
            reply = (False, exc)
        try:
            send(sock, reply)
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
                                            env=env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.sock = parent

    def call(self, fn, args):
        send(self.sock, (fn, args))
        return recv(self.sock)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            send(self.sock, None)
        except OSError:
            pass
        self.sock.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # busy with a long task: it would finish for nobody
            self.process.kill()
            self.process.wait()


class ProcessOffload:
    """`offload(fn, *args)`: fn(*args) run in one of `processes` worker processes, its result (or
    its exception) returned to the calling thread; the caller waits without the GIL. `fn` must
    be importable by name and its arguments must pickle (module-level functions, arrays, paths).
    Workers start on first use and stay until close(); one that dies is replaced."""

    def __init__(self, processes: int):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._workers: list[_Worker] = []
        self._closed = False
        for _ in range(processes):
            self._idle.put(None)  # a slot: its worker starts when first needed

    def __call__(self, fn, *args):
        if self._closed:
            raise RuntimeError("this ProcessOffload is closed")
        worker = self._idle.get()
        try:
            if worker is None:
                worker = _Worker()
                self._workers.append(worker)
            ok, value = worker.call(fn, args)
        except (EOFError, OSError):
            # killed (out of memory, a signal): one line; a fresh worker takes the slot
            self._retire(worker)
            self._idle.put(None)
            raise SslrtError("a preparation worker process died (out of memory or killed); "
                             "retry with fewer workers, or with threads (processes=False)") from None
        except BaseException:
            # interrupted between send and reply: the worker's reply would reach the next caller
            self._retire(worker)
            self._idle.put(None)
            raise
        self._idle.put(worker)
        if not ok:
            raise value
        return value

    def _retire(self, worker: _Worker | None) -> None:
        if worker is not None:
            if worker in self._workers:
                self._workers.remove(worker)
            worker.process.kill()
            worker.stop()

    def close(self) -> None:
        self._closed = True
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
