"""Reading export directories without torch: the manifest, atomic writes, the cache location."""
