"""A storage that hands every call to another one; the read cache and the store's breaker change only the calls
they are about."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from updown_app.storage.base import LocalFile, ObjectInfo, PartInfo, Storage


class StorageWrapper(Storage):
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.name = inner.name

    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        await self.inner.put(key, body, size=size, md5=md5)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self.inner.get(key, offset, length)

    def open_file(self, key: str) -> LocalFile | None:
        return self.inner.open_file(key)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.inner.list(prefix)

    async def check(self) -> None:
        await self.inner.check()

    async def sweep_partials(self, older_than: float) -> tuple[int, int]:
        return await self.inner.sweep_partials(older_than)

    async def put_part(self, key: str, data: bytes) -> str:
        return await self.inner.put_part(key, data)

    def get_part(self, key: str) -> AsyncIterator[bytes]:
        return self.inner.get_part(key)

    async def delete_part(self, key: str) -> bool:
        return await self.inner.delete_part(key)

    def list_parts(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self.inner.list_parts(prefix)

    def assembles_in_place(self, parts: Sequence[PartInfo]) -> bool:
        return self.inner.assembles_in_place(parts)

    async def assemble(
        self, key: str, parts: Sequence[PartInfo], body: AsyncIterator[bytes], *, size: int, md5: str
    ) -> bool:
        return await self.inner.assemble(key, parts, body, size=size, md5=md5)

    async def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        return await self.inner.presigned_url(key, expires_in)

    async def close(self) -> None:
        await self.inner.close()
